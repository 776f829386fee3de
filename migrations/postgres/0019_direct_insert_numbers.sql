-- A row another program inserts whose parameters hold a number beyond a 64-bit float
-- (1e400, or an integer of hundreds of digits) is one signoff cannot read at all: it
-- was passed over by every read, never classified and never expired, so its program
-- waited for a decision that never came. It is refused at the insert instead, with the
-- reason, as the other unreadable rows are: the checks of migration 0016, and this one.
-- A number signoff reads but would round is taken in and denied with the reason (see
-- the intake).
CREATE OR REPLACE FUNCTION signoff_check_direct_row(r pending_approvals) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF jsonb_typeof(r.parameters) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'signoff: parameters must be a JSON object, not %',
            coalesce(jsonb_typeof(r.parameters), 'NULL') USING ERRCODE = 'check_violation';
    END IF;
    IF jsonb_path_exists(r.parameters,
            '$.** ? (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308))') THEN
        RAISE EXCEPTION 'signoff: parameters hold a number beyond a 64-bit float, which signoff cannot read: send it as a string'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NOT (r.expires_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59+00') THEN
        RAISE EXCEPTION 'signoff: expires_at must be a time in the years 1 to 9999, not %',
            r.expires_at USING ERRCODE = 'check_violation';
    END IF;
    IF NOT (r.created_at BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59+00') THEN
        RAISE EXCEPTION 'signoff: created_at must be a time in the years 1 to 9999, not %',
            r.created_at USING ERRCODE = 'check_violation';
    END IF;
END;
$$;
