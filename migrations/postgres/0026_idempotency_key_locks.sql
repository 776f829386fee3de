-- signoff_open_requests as in migration 0017, and the batch's idempotency keys too.
--
-- A repeat of an open request binds its idempotency key to the approval it joins
-- (joined_idempotency_keys, migration 0018), and a new request opens an approval with
-- its key (pending_approvals.idempotency_key). Nothing made two replicas take turns on
-- one key: a repeat joining approval A under key K and another replica's new request
-- under K with other parameters could both commit, and K then named the second, so
-- the first client's retry was refused as a reused key.
--
-- Each key of the batch (token and key) is now locked until commit, before the request
-- keys (the same two steps, in the same order, in every writer, so that two writers
-- never wait for each other), and the function answers which of the keys a repeat has
-- already bound: a lookup of its own, whose snapshot is taken after the locks, where
-- the insert's own statement started before them. The locks' first number spells
-- "SIGO" in ASCII, beside the request keys' "SIGN".
CREATE FUNCTION signoff_open_requests(tokens TEXT[], tools TEXT[], hashes TEXT[], now TIMESTAMPTZ,
                                      key_tokens TEXT[], keys TEXT[])
RETURNS TABLE (token_name TEXT, tool_name TEXT, params_sha256 TEXT, idempotency_key TEXT)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    -- A batch without keys (the usual one) runs no statement for them: each costs
    -- about as much as the lookup itself.
    IF cardinality(keys) > 0 THEN
        PERFORM pg_advisory_xact_lock(1397311311, h) FROM (
            SELECT DISTINCT hashtext(k.token || '/' || k.ikey) AS h
            FROM unnest(key_tokens, keys) AS k(token, ikey)
            ORDER BY h) AS locks;
    END IF;
    PERFORM pg_advisory_xact_lock(1397311310, h) FROM (
        SELECT DISTINCT hashtext(k.token || '/' || k.tool || '/' || k.sha) AS h
        FROM unnest(tokens, tools, hashes) AS k(token, tool, sha)
        ORDER BY h) AS locks;
    RETURN QUERY
        SELECT k.token, k.tool, k.sha, NULL::TEXT
        FROM unnest(tokens, tools, hashes) AS k(token, tool, sha)
        CROSS JOIN LATERAL (
            SELECT 1 FROM pending_approvals p
            WHERE p.id = (SELECT r.approval_id FROM request_keys r
                          WHERE r.token_name = k.token AND r.tool_name = k.tool
                            AND r.params_sha256 = k.sha)
              AND p.status IN ('pending', 'approved') AND p.expires_at > now
            LIMIT 1
        ) AS open;
    IF cardinality(keys) > 0 THEN
        RETURN QUERY
            SELECT k.token, NULL, NULL, k.ikey
            FROM unnest(key_tokens, keys) AS k(token, ikey)
            WHERE EXISTS (SELECT 1 FROM joined_idempotency_keys j
                          WHERE j.token_name = k.token AND j.idempotency_key = k.ikey);
    END IF;
END;
$$;
ALTER FUNCTION signoff_open_requests(TEXT[], TEXT[], TEXT[], TIMESTAMPTZ, TEXT[], TEXT[]) RESET ALL;
