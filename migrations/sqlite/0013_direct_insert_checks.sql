-- What another program writes into the shared table must be a row signoff can read, as
-- PostgreSQL's types make it there. Refused at the insert or the update, with the
-- reason, rather than taken in and never posted, or read by every scheduler pass and
-- failing it (before this, one such row stopped the schedule for every approval). The
-- checks are the insert trigger's first statements (a RAISE there undoes the insert),
-- not a trigger of their own: signoff's own inserts then pay for one `WHEN`, as before.
-- The row starts undecided with no nudge due (signoff plans its reminders when it takes
-- the row in), with an id if it had none (PostgreSQL's default), and its times in
-- signoff's one form (UTC, fixed width, so that text order is time order), whichever
-- form SQLite's date functions read them in.
DROP TRIGGER pending_approvals_direct_insert;
CREATE TRIGGER pending_approvals_direct_insert AFTER INSERT ON pending_approvals
WHEN NEW.routing IS NULL
BEGIN
    SELECT RAISE(ABORT, 'signoff: id must be a UUID, such as 0190d9e4-7c1a-4f6e-8b5a-2f9c1d3e4a5b, or left out')
    WHERE NEW.id IS NOT NULL AND NOT (length(NEW.id) = 36 AND lower(NEW.id) GLOB
        '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]');
    SELECT RAISE(ABORT, 'signoff: parameters must be a JSON object')
    WHERE NOT json_valid(NEW.parameters) OR json_type(NEW.parameters) IS NOT 'object';
    SELECT RAISE(ABORT, 'signoff: tool_name must be text, and requested_by, server, summary and context text or NULL')
    WHERE typeof(NEW.tool_name) <> 'text'
       OR typeof(NEW.requested_by) NOT IN ('text', 'null')
       OR typeof(NEW.server) NOT IN ('text', 'null')
       OR typeof(NEW.summary) NOT IN ('text', 'null')
       OR typeof(NEW.context) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'signoff: expires_at must be a time, such as 2026-12-06T10:00:00Z')
    WHERE typeof(NEW.expires_at) <> 'text' OR julianday(NEW.expires_at) IS NULL;
    UPDATE pending_approvals SET status = 'pending', decided_by = NULL, decision_at = NULL,
        reason = NULL, original_parameters = NULL, params_sha256 = NULL, token_name = NULL,
        idempotency_key = NULL, callback_url = NULL, required_approvals = 1,
        executed_at = NULL, version = 0, decided_via = NULL, nudge_at = NULL,
        id = lower(coalesce(NEW.id,
            hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
            substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) ||
            substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
        expires_at = strftime('%Y-%m-%dT%H:%M:%f', NEW.expires_at) || '000Z',
        created_at = strftime('%Y-%m-%dT%H:%M:%f', NEW.created_at) || '000Z'
    WHERE rowid = NEW.rowid;
END;

-- So is another program's move of a row's expiry (part of the contract), kept in
-- signoff's form too. signoff's own updates change `version`, and a decision's update
-- sets no expiry.
CREATE TRIGGER pending_approvals_expiry_checked BEFORE UPDATE OF expires_at ON pending_approvals
WHEN NEW.version = OLD.version
BEGIN
    SELECT RAISE(ABORT, 'signoff: expires_at must be a time, such as 2026-12-06T10:00:00Z')
    WHERE typeof(NEW.expires_at) <> 'text' OR julianday(NEW.expires_at) IS NULL;
END;
CREATE TRIGGER pending_approvals_expiry_moved AFTER UPDATE OF expires_at ON pending_approvals
WHEN NEW.version = OLD.version
    AND NEW.expires_at IS NOT strftime('%Y-%m-%dT%H:%M:%f', NEW.expires_at) || '000Z'
BEGIN
    UPDATE pending_approvals
    SET expires_at = strftime('%Y-%m-%dT%H:%M:%f', NEW.expires_at) || '000Z'
    WHERE rowid = NEW.rowid;
END;
