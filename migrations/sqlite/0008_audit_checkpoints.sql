-- Signed audit checkpoints: the chain's (seq, hash) at a moment, signed with the
-- Ed25519 key file (which the database does not hold), so that a rewritten or cut
-- chain shows even to whoever can write every table. Numbered from 1 without gaps
-- (the number is signed too), append-only like audit_events.
CREATE TABLE audit_checkpoints (
    n         INTEGER PRIMARY KEY,
    seq       INTEGER NOT NULL,
    hash      TEXT NOT NULL,
    at        TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
