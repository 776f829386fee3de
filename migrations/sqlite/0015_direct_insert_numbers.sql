-- A row another program inserts whose parameters hold a number beyond a 64-bit float
-- (1e400, or an integer of hundreds of digits) is one signoff cannot read at all: it
-- was passed over by every read, never classified and never expired, so its program
-- waited for a decision that never came. It is refused at the insert instead, with
-- the reason, as the other unreadable rows are (migration 0013). SQLite reads such a
-- number as infinite, whichever type it gives it. A number signoff reads but would
-- round is taken in and denied with the reason (see the intake).
CREATE TRIGGER pending_approvals_direct_numbers AFTER INSERT ON pending_approvals
WHEN NEW.routing IS NULL
BEGIN
    SELECT RAISE(ABORT, 'signoff: parameters hold a number beyond a 64-bit float, which signoff cannot read: send it as a string')
    WHERE CASE WHEN json_valid(NEW.parameters) THEN EXISTS (
        SELECT 1 FROM json_tree(NEW.parameters)
        WHERE type IN ('integer', 'real') AND abs(atom) > 1.7976931348623157e308) ELSE 0 END;
END;
