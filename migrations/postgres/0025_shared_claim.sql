-- The claim: another program runs an approved action once, by moving its row from
-- approved to executed in one statement,
--   UPDATE pending_approvals SET status = 'executed' WHERE id = $1 AND status = 'approved'
-- One row updated: this program runs it, with the row's `parameters` (the approved
-- ones, edits included); none: it is not approved (yet, or any more), or it was
-- claimed already. Before, the guard of migration 0020 refused it, and the API's
-- execute refuses a row with no token, so such a program had no single-use gate and
-- two of its workers (or a retry after a crash) could both run the action.
--
-- It is allowed as signoff's own execute would allow it: on a row inserted straight
-- into the table (no token: a row the API or the MCP proxy opened is claimed by its
-- requester, through the API), approved, and not past its expiry (by the database's
-- clock; past it, the update skips the row, as signoff reads it as expired), with
-- `status` the only column the statement changes. The row's `executed_at` is set to
-- the claim's time and its `version` moves on, so that signoff's compare-and-set and
-- locked reads see the change. Every other change stays refused, as before.
--
-- signoff records the claim as it records its own execute: the trigger below leaves a
-- marker in `shared_claims`, which a scheduler pass takes (replicas skip the ones
-- another is taking), appending the `executed` event to the audit chain, updating the
-- Slack message, telling waiters, and deleting the marker, in one transaction.
CREATE TABLE shared_claims (
    approval_id UUID PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL
);

CREATE OR REPLACE FUNCTION signoff_guard_direct_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed TEXT;
    claimed TIMESTAMPTZ;
BEGIN
    IF current_setting('signoff.writer', true) IS NOT DISTINCT FROM 'on' THEN
        RETURN NEW;
    END IF;
    SELECT string_agg(n.key, ', ' ORDER BY n.key) INTO changed
    FROM jsonb_each(to_jsonb(NEW)) AS n JOIN jsonb_each(to_jsonb(OLD)) AS o USING (key)
    WHERE n.key <> 'expires_at' AND n.value IS DISTINCT FROM o.value;
    IF changed = 'status' AND NEW.status = 'executed'
       AND NEW.expires_at IS NOT DISTINCT FROM OLD.expires_at THEN
        IF OLD.status <> 'approved' THEN
            RAISE EXCEPTION 'signoff: only an approved row may be claimed (status set to executed), and this one is %', OLD.status
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'claim with UPDATE pending_approvals SET status = ''executed'' WHERE id = $1 AND status = ''approved''';
        END IF;
        IF OLD.token_name IS NOT NULL THEN
            RAISE EXCEPTION 'signoff: this request was made through signoff''s API or MCP proxy: its requester claims it with the API''s execute, not in the table'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        claimed := clock_timestamp();
        IF claimed >= OLD.expires_at THEN
            -- Expired, as signoff reads it (its next pass records it): nothing to claim.
            RETURN NULL;
        END IF;
        NEW.executed_at := claimed;
        NEW.version := OLD.version + 1;
        RETURN NEW;
    END IF;
    IF changed IS NOT NULL THEN
        RAISE EXCEPTION 'signoff: another program may change only expires_at in pending_approvals (and claim an approved row it inserted: status from approved to executed, alone), not %', changed
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

-- A claim the guard let through leaves its marker and wakes the scheduler (the intake's
-- channel, which every replica hears). With its owner's (signoff's) rights, on a fixed
-- search_path, as migration 0023's trigger: a program granted `UPDATE (status)` alone
-- has none on `shared_claims`. Only a session not signoff's reaches it, and the guard
-- lets only a claim through to an executed row.
CREATE FUNCTION signoff_shared_claimed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('INSERT INTO %I.shared_claims (approval_id, at) VALUES ($1, $2) '
                   'ON CONFLICT (approval_id) DO NOTHING', TG_TABLE_SCHEMA)
        USING NEW.id, NEW.executed_at;
    PERFORM pg_notify('signoff_intake', NEW.id::text);
    RETURN NEW;
END;
$$;
REVOKE ALL ON FUNCTION signoff_shared_claimed() FROM PUBLIC;
CREATE TRIGGER pending_approvals_shared_claimed AFTER UPDATE OF status ON pending_approvals
    FOR EACH ROW
    WHEN (OLD.status = 'approved' AND NEW.status = 'executed'
          AND current_setting('signoff.writer', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION signoff_shared_claimed();
