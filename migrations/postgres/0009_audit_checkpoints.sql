-- Signed audit checkpoints: the chain's (seq, hash) at a moment, signed with the
-- Ed25519 key file (which the database does not hold), so that a rewritten or cut
-- chain shows even to whoever can write every table. Numbered from 1 without gaps
-- (the number is signed too), append-only like audit_events.
CREATE TABLE audit_checkpoints (
    n         BIGINT PRIMARY KEY,
    seq       BIGINT NOT NULL,
    hash      TEXT NOT NULL,
    at        TIMESTAMPTZ NOT NULL,
    signature TEXT NOT NULL
);

CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION signoff_audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION signoff_audit_append_only();
