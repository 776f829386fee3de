-- A row another program inserts is created when it is inserted: its own `created_at`
-- (which the reminders, the escalation and the intake's order go by) is replaced, so
-- that a row dated 9999 is still reminded about and one dated 1970 does not jump the
-- line (one signoff could not read, such as '-infinity', is still refused, as before).
-- A `risk_tier` given as NULL is the column's default, 'medium' (as leaving it out
-- is), rather than a not-null error. Otherwise as migration 0016.
CREATE OR REPLACE FUNCTION signoff_direct_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('signoff.writer', true) IS DISTINCT FROM 'on' THEN
        PERFORM signoff_check_direct_row(NEW);
        NEW.created_at := now();
        NEW.risk_tier := coalesce(NEW.risk_tier, 'medium');
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
