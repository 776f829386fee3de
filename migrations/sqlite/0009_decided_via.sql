-- How a decision was made when it was not made in Slack or by the policy: 'cli' for a
-- break-glass decision with `signoff decide` by an operator with database access
-- (decided_by is then the name they gave). NULL otherwise.
ALTER TABLE pending_approvals ADD COLUMN decided_via TEXT;

-- A row another program inserts starts undecided, this column included.
DROP TRIGGER pending_approvals_direct_insert;
CREATE TRIGGER pending_approvals_direct_insert AFTER INSERT ON pending_approvals
WHEN NEW.routing IS NULL
BEGIN
    UPDATE pending_approvals SET status = 'pending', decided_by = NULL, decision_at = NULL,
        reason = NULL, original_parameters = NULL, params_sha256 = NULL, token_name = NULL,
        idempotency_key = NULL, callback_url = NULL, required_approvals = 1,
        executed_at = NULL, version = 0, decided_via = NULL
    WHERE rowid = NEW.rowid;
END;
