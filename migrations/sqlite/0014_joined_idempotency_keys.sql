-- Idempotency keys that came with a repeat of an open request. The repeat joined that
-- request's approval instead of opening one, and its key names that approval from
-- then on, as a key that opened an approval names it (that row's own
-- idempotency_key): the same key with another call is refused, and a retry with it
-- once the approval is decided or spent answers that approval, not a new one.
CREATE TABLE joined_idempotency_keys (
    token_name      TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    approval_id     TEXT NOT NULL REFERENCES pending_approvals (id),
    PRIMARY KEY (token_name, idempotency_key)
) WITHOUT ROWID;
