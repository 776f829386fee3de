-- Another program may read the shared table, insert requests, and move a pending
-- row's expiry; nothing else. Before, an UPDATE of `status`, `decided_by` and
-- `decision_at` wrote a decision no person made and the audit log never saw, and an
-- UPDATE of `parameters` changed what people had approved (or made the row one signoff
-- could not read). Such an update is refused now, naming the columns, unless the
-- session is signoff's own (`signoff.writer = on`, see migration 0008). Every column
-- but `expires_at` is compared, so a column added later is guarded too; `expires_at`
-- may move only while the row is pending (docs/operations.md).
CREATE FUNCTION signoff_guard_direct_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed TEXT;
BEGIN
    IF current_setting('signoff.writer', true) IS NOT DISTINCT FROM 'on' THEN
        RETURN NEW;
    END IF;
    SELECT string_agg(n.key, ', ' ORDER BY n.key) INTO changed
    FROM jsonb_each(to_jsonb(NEW)) AS n JOIN jsonb_each(to_jsonb(OLD)) AS o USING (key)
    WHERE n.key <> 'expires_at' AND n.value IS DISTINCT FROM o.value;
    IF changed IS NOT NULL THEN
        RAISE EXCEPTION 'signoff: another program may change only expires_at in pending_approvals, not %', changed
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'decisions are made in Slack or through signoff''s API, where they are audited';
    END IF;
    IF NEW.expires_at IS DISTINCT FROM OLD.expires_at AND OLD.status <> 'pending' THEN
        RAISE EXCEPTION 'signoff: only a pending row''s expires_at may be moved, and this one is %', OLD.status
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
-- BEFORE UPDATE triggers run in the order of their names: this one before
-- pending_approvals_direct_update (0016), which checks the new times. The WHEN clause
-- keeps signoff's own updates (every click's) from calling the function at all.
CREATE TRIGGER pending_approvals_direct_guard BEFORE UPDATE ON pending_approvals
    FOR EACH ROW WHEN (current_setting('signoff.writer', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION signoff_guard_direct_update();
