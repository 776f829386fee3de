-- How a decision was made when it was not made in Slack or by the policy: 'cli' for a
-- break-glass decision with `signoff decide` by an operator with database access
-- (decided_by is then the name they gave). NULL otherwise.
ALTER TABLE pending_approvals ADD COLUMN decided_via TEXT;

-- A row another program inserts starts undecided, this column included.
CREATE OR REPLACE FUNCTION signoff_direct_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('signoff.writer', true) IS DISTINCT FROM 'on' THEN
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
