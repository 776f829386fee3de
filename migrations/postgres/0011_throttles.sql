-- Approval fatigue (`max_pending`): a requester's waiting requests are counted at every
-- create, through this index (pending rows only, so the count never reads history).
CREATE INDEX pending_approvals_waiting ON pending_approvals (token_name) WHERE status = 'pending';

-- A requester (API token) refused for having `max_pending` requests waiting, per channel
-- its refused requests were for: the row exists from the first refusal until the
-- requester is accepted again, so each channel gets one notice per episode.
CREATE TABLE throttles (
    token_name TEXT NOT NULL,
    channel    TEXT NOT NULL,   -- '' when the refused request had no channel
    since      TIMESTAMPTZ NOT NULL,
    refused    BIGINT NOT NULL DEFAULT 1,
    PRIMARY KEY (token_name, channel)
);
