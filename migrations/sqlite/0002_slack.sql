-- Slack messages posted for an approval (the channel post, escalation posts, DMs), so
-- every one of them can be updated when the approval changes.
CREATE TABLE slack_messages (
    approval_id      TEXT NOT NULL REFERENCES pending_approvals (id),
    channel          TEXT NOT NULL,
    ts               TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('main', 'escalation', 'dm')),
    permalink        TEXT,
    -- The approval version the message shows; an update is due when it falls behind.
    rendered_version INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (channel, ts)
);
CREATE INDEX slack_messages_approval ON slack_messages (approval_id);
