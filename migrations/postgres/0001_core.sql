-- signoff core schema (PostgreSQL). `pending_approvals` is the shared table: its first
-- columns are a public contract (see DESIGN.md), so code outside signoff can INSERT
-- (tool_name, parameters, risk_tier, requested_by, expires_at) and read decisions.

CREATE TABLE pending_approvals (
    id                  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tool_name           TEXT NOT NULL,
    parameters          JSONB NOT NULL DEFAULT '{}'::jsonb,
    risk_tier           TEXT NOT NULL DEFAULT 'medium' CHECK (risk_tier IN ('low', 'medium', 'high')),
    status              TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'executed', 'cancelled')),
    requested_by        TEXT,
    decided_by          TEXT,
    decision_at         TIMESTAMPTZ,
    expires_at          TIMESTAMPTZ NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    -- signoff's own columns
    summary             TEXT,
    context             TEXT,
    reason              TEXT,
    original_parameters JSONB,
    params_sha256       TEXT,
    token_name          TEXT,
    idempotency_key     TEXT,
    callback_url        TEXT,
    required_approvals  INTEGER NOT NULL DEFAULT 1,
    routing             JSONB,                         -- NULL until signoff classified the row
    executed_at         TIMESTAMPTZ,
    version             BIGINT NOT NULL DEFAULT 0
);

CREATE UNIQUE INDEX pending_approvals_dedup ON pending_approvals (token_name, tool_name, params_sha256)
    WHERE status = 'pending' AND token_name IS NOT NULL;
CREATE UNIQUE INDEX pending_approvals_idempotency ON pending_approvals (token_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX pending_approvals_open ON pending_approvals (status, expires_at);

CREATE TABLE votes (
    approval_id UUID NOT NULL REFERENCES pending_approvals (id),
    user_id     TEXT NOT NULL,
    decision    TEXT NOT NULL CHECK (decision IN ('approve', 'deny')),
    reason      TEXT,
    at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (approval_id, user_id)
);

CREATE TABLE jobs (
    id           BIGSERIAL PRIMARY KEY,
    approval_id  UUID NOT NULL,
    kind         TEXT NOT NULL,
    payload      JSONB NOT NULL DEFAULT '{}'::jsonb,
    due_at       TIMESTAMPTZ NOT NULL,
    state        TEXT NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'done', 'dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    locked_until TIMESTAMPTZ,
    last_error   TEXT,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX jobs_due ON jobs (due_at) WHERE state = 'ready';
CREATE INDEX jobs_approval ON jobs (approval_id, kind);

CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY,
    approval_id UUID,
    kind        TEXT NOT NULL,
    actor       TEXT,
    at          TIMESTAMPTZ NOT NULL,
    data        TEXT NOT NULL,          -- canonical JSON, kept as text so the hash input is exact
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_events_approval ON audit_events (approval_id);

CREATE FUNCTION signoff_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP;
END;
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION signoff_audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION signoff_audit_append_only();

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE api_tokens (
    name       TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
