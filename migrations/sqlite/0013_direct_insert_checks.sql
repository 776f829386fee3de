-- A row another program inserts must be one signoff can read, as PostgreSQL's types
-- make it there: refused at the insert, with the reason, rather than taken in and never
-- posted (or, before this, stopping the schedule for every row).
CREATE TRIGGER pending_approvals_direct_insert_checked BEFORE INSERT ON pending_approvals
WHEN NEW.routing IS NULL
BEGIN
    SELECT RAISE(ABORT, 'signoff: id must be a UUID, such as 0190d9e4-7c1a-4f6e-8b5a-2f9c1d3e4a5b, or left out')
    WHERE NEW.id IS NOT NULL AND NOT (length(NEW.id) = 36 AND lower(NEW.id) GLOB
        '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]');
    SELECT RAISE(ABORT, 'signoff: parameters must be a JSON object')
    WHERE NOT json_valid(NEW.parameters) OR json_type(NEW.parameters) IS NOT 'object';
    SELECT RAISE(ABORT, 'signoff: expires_at must be a time, such as 2026-12-06T10:00:00Z')
    WHERE julianday(NEW.expires_at) IS NULL;
END;

-- ...and starts undecided, with an id if it had none (PostgreSQL's default), and its
-- times in signoff's one format (UTC, fixed width, so that text order is time order),
-- whichever form SQLite's date functions read it in.
DROP TRIGGER pending_approvals_direct_insert;
CREATE TRIGGER pending_approvals_direct_insert AFTER INSERT ON pending_approvals
WHEN NEW.routing IS NULL
BEGIN
    UPDATE pending_approvals SET status = 'pending', decided_by = NULL, decision_at = NULL,
        reason = NULL, original_parameters = NULL, params_sha256 = NULL, token_name = NULL,
        idempotency_key = NULL, callback_url = NULL, required_approvals = 1,
        executed_at = NULL, version = 0, decided_via = NULL,
        id = lower(coalesce(NEW.id,
            hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
            substr(hex(randomblob(2)), 2) || '-' || substr('89ab', 1 + (abs(random()) % 4), 1) ||
            substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))),
        expires_at = strftime('%Y-%m-%dT%H:%M:%f', NEW.expires_at) || '000Z',
        created_at = strftime('%Y-%m-%dT%H:%M:%f', NEW.created_at) || '000Z'
    WHERE rowid = NEW.rowid;
END;
