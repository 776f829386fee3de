-- An approval's first reminder and its escalation post are no longer written as jobs
-- when it opens: its row keeps when the first of them falls due (`nudge_at`), and the
-- scheduler's timer pass writes them as jobs when they fall due (`jobs::nudges`), then
-- moves `nudge_at` to the next or clears it. Most requests are decided before and
-- never write them. Reminders and escalations already planned as jobs stay jobs: their
-- rows have no `nudge_at`.
ALTER TABLE pending_approvals ADD COLUMN nudge_at TEXT;
CREATE INDEX pending_approvals_nudge ON pending_approvals (nudge_at) WHERE nudge_at IS NOT NULL;
