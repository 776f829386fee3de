-- Rows inserted straight into pending_approvals (routing unset) wait here for
-- signoff to classify them. A trigger tells every replica at once (LISTEN
-- signoff_intake); the scheduler's sweep of this index is the safety net.
CREATE INDEX pending_approvals_intake ON pending_approvals (created_at) WHERE routing IS NULL;

CREATE FUNCTION signoff_notify_intake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('signoff_intake', NEW.id::text);
    RETURN NEW;
END;
$$;
CREATE TRIGGER pending_approvals_intake AFTER INSERT ON pending_approvals
    FOR EACH ROW WHEN (NEW.routing IS NULL) EXECUTE FUNCTION signoff_notify_intake();
