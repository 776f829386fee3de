-- A row another program inserts must be one signoff can read: its parameters a JSON
-- object, as the API requires of every request. Refused at the insert, with the reason,
-- rather than taken in and never posted. signoff's own rows are checked by the API.
CREATE OR REPLACE FUNCTION signoff_direct_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('signoff.writer', true) IS DISTINCT FROM 'on' THEN
        IF jsonb_typeof(NEW.parameters) IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'signoff: parameters must be a JSON object, not %',
                coalesce(jsonb_typeof(NEW.parameters), 'NULL')
                USING ERRCODE = 'check_violation';
        END IF;
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
    END IF;
    RETURN NEW;
END;
$$;
