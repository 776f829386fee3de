-- Slack messages posted for an approval (the channel post, escalation posts, DMs), so
-- every one of them can be updated when the approval changes.
CREATE TABLE slack_messages (
    approval_id      UUID NOT NULL REFERENCES pending_approvals (id),
    channel          TEXT NOT NULL,
    ts               TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('main', 'escalation', 'dm')),
    permalink        TEXT,
    rendered_version BIGINT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (channel, ts)
);
CREATE INDEX slack_messages_approval ON slack_messages (approval_id);
