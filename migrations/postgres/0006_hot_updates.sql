-- Decisions and expiries update an approval in place (a HOT update: the new row
-- version stays on its page and no index gets a new entry). That needs free room on
-- the page and no index over a column they change; `status` was in two. Before, an
-- expiry also wrote a new primary-key entry on a random page (the ids are random),
-- which after each checkpoint went into the write-ahead log whole.

-- Room on each page for updated row versions (pages filled from now on).
ALTER TABLE pending_approvals SET (fillfactor = 85);

-- Expiry timers: a plain index on expires_at, read from a watermark. Every pending or
-- approved approval expires at or after `expiry_watermark.below`; a scheduler pass
-- reads the due ones from there and then moves it up to the earliest one still open.
-- signoff's writers that add an open approval below it (an insert or an adoption) move
-- it down before they commit, and passes move it up, all under the audit head's row
-- lock, which orders signoff's writers; the trigger below moves it down for another
-- program's update, under the watermark's own row lock, which a pass takes too.
-- Expired and decided approvals keep their entry, behind the mark.
CREATE TABLE expiry_watermark (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    below TIMESTAMPTZ NOT NULL
);
-- It starts at the earliest open expiry (with none, at 1970: the first pass then reads
-- the expiries of every approval decided so far, once).
INSERT INTO expiry_watermark (id, below)
SELECT 1, COALESCE(MIN(expires_at), '1970-01-01 00:00:00+00')
FROM pending_approvals WHERE status IN ('pending', 'approved');

DROP INDEX pending_approvals_open;
CREATE INDEX pending_approvals_expiry ON pending_approvals (expires_at);

-- Another program that reopens an approval or moves its expiry earlier moves the
-- watermark down with it. signoff's own updates change `version` and are left out:
-- signoff moves the watermark itself, at commit.
CREATE FUNCTION signoff_expiry_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE expiry_watermark SET below = LEAST(below, NEW.expires_at) WHERE id = 1;
    RETURN NEW;
END;
$$;
CREATE TRIGGER pending_approvals_expiry_moved AFTER UPDATE OF status, expires_at ON pending_approvals
    FOR EACH ROW
    WHEN (NEW.version = OLD.version AND NEW.status IN ('pending', 'approved')
          AND (NEW.expires_at < OLD.expires_at OR OLD.status NOT IN ('pending', 'approved')))
    EXECUTE FUNCTION signoff_expiry_moved();

-- Duplicate requests: `request_keys` names, per token, tool and parameters, the newest
-- pending request signoff opened with them; a repeat is one whose entry names an
-- approval still pending. The writer locks the key (an advisory lock, so replicas take
-- turns), looks, and inserts. This replaces the unique index over the pending ones: an
-- entry there is only written when a request opens, never when it is decided or
-- expires, and no index on pending_approvals holds the key (which, a hash, would put
-- each row updated out of place on a random index page).
CREATE TABLE request_keys (
    token_name    TEXT NOT NULL,
    tool_name     TEXT NOT NULL,
    params_sha256 TEXT NOT NULL,
    approval_id   UUID NOT NULL,
    PRIMARY KEY (token_name, tool_name, params_sha256)
);
INSERT INTO request_keys (token_name, tool_name, params_sha256, approval_id)
SELECT token_name, tool_name, params_sha256, id FROM pending_approvals
WHERE status = 'pending' AND token_name IS NOT NULL AND params_sha256 IS NOT NULL;
DROP INDEX pending_approvals_dedup;

-- Locks the keys of a batch of new requests until commit (advisory locks, taken in one
-- order, so replicas inserting the same request take turns; 1397311310 is "SIGN" in
-- ASCII, which keeps them apart from other programs' advisory locks) and answers those
-- whose newest request is still pending. One round trip for both: as a volatile
-- function, its look starts after the locks are held and sees what their last holder
-- committed.
CREATE FUNCTION signoff_pending_requests(tokens TEXT[], tools TEXT[], hashes TEXT[])
RETURNS TABLE (token_name TEXT, tool_name TEXT, params_sha256 TEXT)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1397311310, h) FROM (
        SELECT DISTINCT hashtext(k.token || '/' || k.tool || '/' || k.sha) AS h
        FROM unnest(tokens, tools, hashes) AS k(token, tool, sha)
        ORDER BY h) AS locks;
    RETURN QUERY
        SELECT k.token, k.tool, k.sha
        FROM unnest(tokens, tools, hashes) AS k(token, tool, sha)
        JOIN request_keys r
          ON r.token_name = k.token AND r.tool_name = k.tool AND r.params_sha256 = k.sha
        JOIN pending_approvals p ON p.id = r.approval_id
        WHERE p.status = 'pending';
END;
$$;
