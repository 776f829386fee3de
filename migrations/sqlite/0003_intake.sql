-- Rows inserted straight into pending_approvals (routing unset) wait here for
-- signoff to classify them; the scheduler sweeps this index.
CREATE INDEX pending_approvals_intake ON pending_approvals (created_at) WHERE routing IS NULL;
