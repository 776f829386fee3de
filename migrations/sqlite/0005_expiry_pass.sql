-- Expiry timers are the approvals' own expires_at instead of an 'expire' row per
-- approval in jobs: an expiry that another program moves in the shared table (earlier
-- or later) is kept at its new time, and firing one touches no job row.
DELETE FROM jobs WHERE kind = 'expire';

-- The open index now holds only the approvals that can still expire, pending and
-- approved, in expiry order per status: it is the scheduler's timer index and what
-- health counts. A decision or an expiry removes an entry instead of moving it.
DROP INDEX pending_approvals_open;
CREATE INDEX pending_approvals_open ON pending_approvals (status, expires_at)
    WHERE status IN ('pending', 'approved');

-- No query reads the audit log by approval (verify and export read it in seq order),
-- so this index only cost a random page write per event.
DROP INDEX audit_events_approval;
