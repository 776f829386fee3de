-- Counting a requester's waiting requests (`max_pending`) through an index whose
-- predicate names `status` made every decision and expiry a non-HOT update (see 0006:
-- no index over a column they change). This one holds only columns a decision never
-- changes: a waiting request has not expired yet, so the count reads the requester's
-- rows whose expiry is still ahead, not its whole history.
DROP INDEX pending_approvals_waiting;
CREATE INDEX pending_approvals_requester ON pending_approvals (token_name, expires_at);
