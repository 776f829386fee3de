-- What another program writes into the shared table must be a row signoff can read:
-- parameters a JSON object (as the API requires of every request), and times signoff
-- can represent (the years 1 to 9999; not 'infinity'). Refused at the insert or the
-- update, with the reason, rather than taken in and never posted, or read by every
-- scheduler pass and failing it.
CREATE FUNCTION signoff_check_direct_row(r pending_approvals) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF jsonb_typeof(r.parameters) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'signoff: parameters must be a JSON object, not %',
            coalesce(jsonb_typeof(r.parameters), 'NULL') USING ERRCODE = 'check_violation';
    END IF;
    IF NOT (r.expires_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59+00') THEN
        RAISE EXCEPTION 'signoff: expires_at must be a time in the years 1 to 9999, not %',
            r.expires_at USING ERRCODE = 'check_violation';
    END IF;
    IF NOT (r.created_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59+00') THEN
        RAISE EXCEPTION 'signoff: created_at must be a time in the years 1 to 9999, not %',
            r.created_at USING ERRCODE = 'check_violation';
    END IF;
END;
$$;

-- A row another program inserts is checked, and starts undecided with no nudge due
-- (signoff plans its reminders when it takes the row in).
CREATE OR REPLACE FUNCTION signoff_direct_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('signoff.writer', true) IS DISTINCT FROM 'on' THEN
        PERFORM signoff_check_direct_row(NEW);
        NEW.status := 'pending';
        NEW.decided_by := NULL;
        NEW.decision_at := NULL;
        NEW.reason := NULL;
        NEW.original_parameters := NULL;
        NEW.params_sha256 := NULL;
        NEW.token_name := NULL;
        NEW.idempotency_key := NULL;
        NEW.callback_url := NULL;
        NEW.required_approvals := 1;
        NEW.routing := NULL;
        NEW.executed_at := NULL;
        NEW.version := 0;
        NEW.decided_via := NULL;
        NEW.nudge_at := NULL;
    END IF;
    RETURN NEW;
END;
$$;

-- So is another program's change of a row's times (moving an expiry is part of the
-- contract). signoff's own updates change `version` and never call the function; a
-- decision's update sets neither time, so the trigger is not even considered for it.
CREATE FUNCTION signoff_direct_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('signoff.writer', true) IS DISTINCT FROM 'on' THEN
        PERFORM signoff_check_direct_row(NEW);
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER pending_approvals_direct_update
    BEFORE UPDATE OF expires_at, created_at ON pending_approvals
    FOR EACH ROW WHEN (NEW.version = OLD.version) EXECUTE FUNCTION signoff_direct_update();
