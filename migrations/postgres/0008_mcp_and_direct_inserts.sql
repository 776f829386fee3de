-- The MCP server a tool belongs to (the proxy's --name); NULL outside MCP. It is part
-- of what makes two requests the same (folded into params_sha256, see store::requests).
ALTER TABLE pending_approvals ADD COLUMN server TEXT;

-- A row another program inserts straight into the table starts pending and
-- unclassified, whatever status or signoff columns it carries, so that the policy
-- classifies it like any request (a deny tier denies it) and the audit log records its
-- intake. signoff's own connections say who they are with `signoff.writer = on`.
CREATE FUNCTION signoff_direct_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('signoff.writer', true) IS DISTINCT FROM 'on' THEN
        NEW.status := 'pending';
        NEW.decided_by := NULL;
        NEW.decision_at := NULL;
        NEW.reason := NULL;
        NEW.original_parameters := NULL;
        NEW.params_sha256 := NULL;
        NEW.token_name := NULL;
        NEW.idempotency_key := NULL;
        NEW.callback_url := NULL;
        NEW.required_approvals := 1;
        NEW.routing := NULL;
        NEW.executed_at := NULL;
        NEW.version := 0;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER pending_approvals_direct_insert BEFORE INSERT ON pending_approvals
    FOR EACH ROW EXECUTE FUNCTION signoff_direct_insert();

-- A repeated request joins the open one: pending, or approved and neither executed nor
-- past its expiry (an MCP client that retries after its call timed out joins the
-- approval, also once it is decided, and runs it once). `request_keys` now names the
-- newest pending or approved request per key.
CREATE FUNCTION signoff_open_requests(tokens TEXT[], tools TEXT[], hashes TEXT[], now TIMESTAMPTZ)
RETURNS TABLE (token_name TEXT, tool_name TEXT, params_sha256 TEXT)
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_custom_plan AS $$
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
        WHERE p.status = 'pending' OR (p.status = 'approved' AND p.expires_at > now);
END;
$$;
DROP FUNCTION signoff_pending_requests(TEXT[], TEXT[], TEXT[]);
