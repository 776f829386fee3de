-- signoff_open_requests without a plan per call. Migration 0007 had its lookup planned
-- on every call (force_custom_plan), because a plan kept from a small table joined the
-- keys to request_keys and the approvals by scanning them, and kept doing so as they
-- grew; planning cost about as much as the lookup itself. Each key is now looked up on
-- its own, through request_keys' primary key and then the approvals' (an equality on
-- a unique index each; the LIMIT keeps the planner from turning the per-key lookup
-- back into a join), which is the plan at any table size, so the function keeps it.
CREATE OR REPLACE FUNCTION signoff_open_requests(tokens TEXT[], tools TEXT[], hashes TEXT[], now TIMESTAMPTZ)
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
        CROSS JOIN LATERAL (
            SELECT 1 FROM pending_approvals p
            WHERE p.id = (SELECT r.approval_id FROM request_keys r
                          WHERE r.token_name = k.token AND r.tool_name = k.tool
                            AND r.params_sha256 = k.sha)
              AND (p.status = 'pending' OR (p.status = 'approved' AND p.expires_at > now))
            LIMIT 1
        ) AS open;
END;
$$;
ALTER FUNCTION signoff_open_requests(TEXT[], TEXT[], TEXT[], TIMESTAMPTZ) RESET ALL;
