-- Duplicate requests: the writer looks up the newest request with the same token, tool
-- and parameters inside its write transaction (one writer per file), instead of a
-- unique index over the pending ones, whose entry (on a random page: the key is a
-- hash) every decision and expiry had to delete.
DROP INDEX pending_approvals_dedup;
CREATE INDEX pending_approvals_request ON pending_approvals (token_name, tool_name, params_sha256)
    WHERE token_name IS NOT NULL;
