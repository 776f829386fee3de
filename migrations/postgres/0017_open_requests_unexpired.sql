-- signoff_open_requests as in migration 0014, except that a pending request past its
-- expiry is no longer open: until the expiry pass marked it expired (up to its period
-- later), a repeat joined it and was answered with a request about to expire unrun.
-- A request is open while pending or approved, and not past its expiry, whatever the
-- pass has done yet.
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
              AND p.status IN ('pending', 'approved') AND p.expires_at > now
            LIMIT 1
        ) AS open;
END;
$$;
ALTER FUNCTION signoff_open_requests(TEXT[], TEXT[], TEXT[], TIMESTAMPTZ) RESET ALL;
