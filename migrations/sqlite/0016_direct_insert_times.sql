-- A row another program inserts is created when it is inserted, as on PostgreSQL
-- (migration 0022 there): its own `created_at`, which the reminders, the escalation and
-- the intake's order go by, is replaced. A row dated in 9999 planned its first reminder
-- past the year 9999, a time SQLite's text order puts before every other and signoff
-- cannot read back, so every scheduler pass failed on it from then on (no expiry, no
-- reminder, no checkpoint); one dated 1970 was reminded about and escalated at once,
-- and went first in the intake. Otherwise as migration 0013.
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
        created_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z'
    WHERE rowid = NEW.rowid;
END;
