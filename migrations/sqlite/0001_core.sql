-- signoff core schema (SQLite). Same logical schema as migrations/postgres.
-- Times are TEXT in one fixed-width UTC format (YYYY-MM-DDTHH:MM:SS.ffffffZ), so they
-- compare correctly as strings.

CREATE TABLE pending_approvals (
    id                  TEXT PRIMARY KEY,
    tool_name           TEXT NOT NULL,
    parameters          TEXT NOT NULL,                 -- JSON object
    risk_tier           TEXT NOT NULL DEFAULT 'medium' CHECK (risk_tier IN ('low', 'medium', 'high')),
    status              TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'executed', 'cancelled')),
    requested_by        TEXT,
    decided_by          TEXT,
    decision_at         TEXT,
    expires_at          TEXT NOT NULL,
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- signoff's own columns
    summary             TEXT,
    context             TEXT,
    reason              TEXT,
    original_parameters TEXT,
    params_sha256       TEXT,
    token_name          TEXT,
    idempotency_key     TEXT,
    callback_url        TEXT,
    required_approvals  INTEGER NOT NULL DEFAULT 1,
    routing             TEXT,                          -- JSON; NULL until signoff classified the row
    executed_at         TEXT,
    version             INTEGER NOT NULL DEFAULT 0
);

-- One pending request per (token, tool, canonical parameters): duplicates get the existing one.
CREATE UNIQUE INDEX pending_approvals_dedup ON pending_approvals (token_name, tool_name, params_sha256)
    WHERE status = 'pending' AND token_name IS NOT NULL;
CREATE UNIQUE INDEX pending_approvals_idempotency ON pending_approvals (token_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX pending_approvals_open ON pending_approvals (status, expires_at);

CREATE TABLE votes (
    approval_id TEXT NOT NULL REFERENCES pending_approvals (id),
    user_id     TEXT NOT NULL,
    decision    TEXT NOT NULL CHECK (decision IN ('approve', 'deny')),
    reason      TEXT,
    at          TEXT NOT NULL,
    PRIMARY KEY (approval_id, user_id)
);

-- Durable work: deliveries (outbox) and timers, one table. A job is due at due_at;
-- a worker leases it by setting locked_until, and finishes it (done) or gives up (dead).
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    approval_id  TEXT NOT NULL,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL DEFAULT '{}',
    due_at       TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT,
    last_error   TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX jobs_due ON jobs (due_at) WHERE state = 'ready';
CREATE INDEX jobs_approval ON jobs (approval_id, kind);

-- Append-only, hash-chained audit log. hash = sha256(prev_hash || canonical JSON of the event).
CREATE TABLE audit_events (
    seq         INTEGER PRIMARY KEY,
    approval_id TEXT,
    kind        TEXT NOT NULL,
    actor       TEXT,
    at          TEXT NOT NULL,
    data        TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_events_approval ON audit_events (approval_id);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

-- The head of the chain, so appends serialize on one row.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE api_tokens (
    name       TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
