-- Batching (`batch_window`): look-alike requests of one requester are posted as one
-- message. A batch is open, collecting members, until its post goes out; the post
-- closes it (deletes its row) before reading its members, so a request joins only a
-- batch whose message will list it.
CREATE TABLE slack_batches (
    leader_id  TEXT PRIMARY KEY REFERENCES pending_approvals (id),
    -- What the members share: channel, requester, server, tool, rule, parameter names.
    batch_key  TEXT NOT NULL,
    closes_at  TEXT NOT NULL,
    size       INTEGER NOT NULL
);
CREATE INDEX slack_batches_key ON slack_batches (batch_key);

-- Every approval that was batched, with its batch's leader (the leader too) and its
-- place in the message.
CREATE TABLE slack_batch_members (
    approval_id TEXT PRIMARY KEY REFERENCES pending_approvals (id),
    leader_id   TEXT NOT NULL,
    position    INTEGER NOT NULL
);
CREATE INDEX slack_batch_members_leader ON slack_batch_members (leader_id);

-- One batch message is a message of each of its approvals: a row per approval.
CREATE TABLE slack_messages_new (
    approval_id      TEXT NOT NULL REFERENCES pending_approvals (id),
    channel          TEXT NOT NULL,
    ts               TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('main', 'escalation', 'dm')),
    permalink        TEXT,
    rendered_version INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (channel, ts, approval_id)
);
INSERT INTO slack_messages_new
    SELECT approval_id, channel, ts, kind, permalink, rendered_version, created_at
    FROM slack_messages;
DROP TABLE slack_messages;
ALTER TABLE slack_messages_new RENAME TO slack_messages;
CREATE INDEX slack_messages_approval ON slack_messages (approval_id);
