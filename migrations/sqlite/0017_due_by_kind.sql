-- The scheduler reads the due callbacks apart from the other deliveries (Slack's), in
-- a loop of their own (`Due` in src/jobs.rs, `jobs::DUE_DELIVERIES` and
-- `jobs::DUE_CALLBACKS` in src/store/sql.rs), each read through an index of its own
-- kinds, so that neither walks the other's backlog: callbacks to receivers that never
-- answer, retried for two hours, do not lie in the way of the posts, nor a backlog of
-- posts in the callbacks'. The conditions are the reads' own, word for word (a partial
-- index serves a query whose WHERE clause has its terms). `jobs_due` stays for the
-- reads of every kind (`/health/approvals`). `kind` never changes and `state` only
-- when a job is given up, so a claim or a report touches no new indexed column.
CREATE INDEX jobs_due_deliveries ON jobs (due_at) WHERE state = 'ready' AND kind <> 'callback';
CREATE INDEX jobs_due_callbacks ON jobs (due_at) WHERE state = 'ready' AND kind = 'callback';
