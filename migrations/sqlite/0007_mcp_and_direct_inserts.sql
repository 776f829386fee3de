-- The MCP server a tool belongs to (the proxy's --name); NULL outside MCP. It is part
-- of what makes two requests the same (folded into params_sha256, see store::requests).
ALTER TABLE pending_approvals ADD COLUMN server TEXT;

-- A row another program inserts straight into the table (signoff's columns left at
-- their defaults, so `routing` unset) starts pending, whatever status it carries, so
-- that the policy classifies it like any request (a deny tier denies it) and the
-- audit log records its intake.
CREATE TRIGGER pending_approvals_direct_insert AFTER INSERT ON pending_approvals
WHEN NEW.routing IS NULL
BEGIN
    UPDATE pending_approvals SET status = 'pending', decided_by = NULL, decision_at = NULL,
        reason = NULL, original_parameters = NULL, params_sha256 = NULL, token_name = NULL,
        idempotency_key = NULL, callback_url = NULL, required_approvals = 1,
        executed_at = NULL, version = 0
    WHERE rowid = NEW.rowid;
END;
