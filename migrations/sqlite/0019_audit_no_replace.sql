-- INSERT OR REPLACE (and REPLACE INTO) of an audit row with a number already taken
-- deletes the row it conflicts with without firing its BEFORE DELETE trigger (SQLite
-- fires delete triggers for REPLACE only with recursive_triggers on, a setting of the
-- connection making the change). So an event, or a checkpoint, could be changed in
-- place with no guard lifted. An insert that takes a number in use is refused before
-- the conflict is resolved, so REPLACE never deletes. (PostgreSQL's INSERT ... ON
-- CONFLICT DO UPDATE fires the UPDATE guard.)
CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events
WHEN EXISTS (SELECT 1 FROM audit_events WHERE seq = NEW.seq)
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_replace BEFORE INSERT ON audit_checkpoints
WHEN EXISTS (SELECT 1 FROM audit_checkpoints WHERE n = NEW.n)
BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END;
