-- A finished job is deleted, not kept as 'done': the audit log is the history, and the
-- jobs table stays as small as the work still to do. Nothing looks jobs up by
-- approval, so that index only cost a random page write per job.
DROP INDEX jobs_approval;
DELETE FROM jobs WHERE state = 'done';
