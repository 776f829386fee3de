-- Batching (`batch_window`): look-alike requests of one requester are posted as one
-- message. A batch is open, collecting members, until its post goes out; the post
-- closes it (deletes its row) before reading its members, and a request joins a batch
-- only under its row's lock, so it joins only a batch whose message will list it.
CREATE TABLE slack_batches (
    leader_id  UUID PRIMARY KEY REFERENCES pending_approvals (id),
    -- What the members share: channel, requester, server, tool, rule, parameter names.
    batch_key  TEXT NOT NULL,
    closes_at  TIMESTAMPTZ NOT NULL,
    size       BIGINT NOT NULL
);
CREATE INDEX slack_batches_key ON slack_batches (batch_key);

-- Every approval that was batched, with its batch's leader (the leader too) and its
-- place in the message.
CREATE TABLE slack_batch_members (
    approval_id UUID PRIMARY KEY REFERENCES pending_approvals (id),
    leader_id   UUID NOT NULL,
    position    BIGINT NOT NULL
);
CREATE INDEX slack_batch_members_leader ON slack_batch_members (leader_id);

-- One batch message is a message of each of its approvals: a row per approval.
ALTER TABLE slack_messages DROP CONSTRAINT slack_messages_pkey,
    ADD PRIMARY KEY (channel, ts, approval_id);
