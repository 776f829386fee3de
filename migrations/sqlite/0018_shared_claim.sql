-- The claim (as migration 0025 on PostgreSQL): another program runs an approved action
-- once, by moving its row from approved to executed in one statement,
--   UPDATE pending_approvals SET status = 'executed' WHERE id = $1 AND status = 'approved'
-- One row updated: this program runs it, with the row's `parameters` (the approved
-- ones, edits included); none: not approved (yet, or any more), or claimed already.
-- Before, nothing recorded it: no audit event, no message update, and signoff never
-- learned of it.
--
-- signoff's own updates move `version`; another program's claim changes `status`
-- alone. It is allowed as signoff's own execute would allow it: on a row with no
-- token (a row the API or the MCP proxy opened is claimed by its requester, through
-- the API), approved (a pending or decided row is refused), not past its expiry (by
-- the database's clock; past it, the update skips the row, as signoff reads it as
-- expired), and changing nothing people approved. The claim sets `executed_at`, moves
-- `version` on (signoff's compare-and-set sees it), and leaves a marker in
-- `shared_claims`, which signoff's next scheduler pass takes: the `executed` event in
-- the audit chain, the Slack message updated, waiters told.
CREATE TABLE shared_claims (
    approval_id TEXT PRIMARY KEY,
    at          TEXT NOT NULL
);

CREATE TRIGGER pending_approvals_claim_checked BEFORE UPDATE OF status ON pending_approvals
WHEN NEW.status = 'executed' AND OLD.status IS NOT 'executed' AND NEW.version = OLD.version
BEGIN
    SELECT RAISE(ABORT, 'signoff: only an approved row may be claimed (status set to executed)')
    WHERE OLD.status IS NOT 'approved';
    SELECT RAISE(ABORT, 'signoff: this request was made through signoff''s API or MCP proxy: its requester claims it with the API''s execute, not in the table')
    WHERE OLD.token_name IS NOT NULL;
    SELECT RAISE(ABORT, 'signoff: a claim sets status alone: tool_name, server, parameters and expires_at stay as approved')
    WHERE NEW.tool_name IS NOT OLD.tool_name OR NEW.server IS NOT OLD.server
       OR NEW.parameters IS NOT OLD.parameters OR NEW.expires_at IS NOT OLD.expires_at;
    -- Expired, as signoff reads it (its next pass records it): nothing to claim.
    SELECT RAISE(IGNORE)
    WHERE strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z' >= OLD.expires_at;
END;

CREATE TRIGGER pending_approvals_claimed AFTER UPDATE OF status ON pending_approvals
WHEN OLD.status = 'approved' AND NEW.status = 'executed' AND NEW.version = OLD.version
BEGIN
    UPDATE pending_approvals
    SET executed_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z', version = OLD.version + 1
    WHERE rowid = NEW.rowid;
    INSERT OR IGNORE INTO shared_claims (approval_id, at)
    VALUES (NEW.id, strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z');
END;
