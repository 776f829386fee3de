-- Parameters nested deeper than signoff's JSON reader goes (128 levels) made a row
-- signoff could not read: inserted, never taken in, and, a hundred of them, first in
-- the intake's line for ever. They are refused at the insert now, with the reason,
-- beyond 100 levels (what signoff writes around parameters in its audit events and
-- messages stays readable). The other checks are those of migrations 0016 and 0019.
CREATE OR REPLACE FUNCTION signoff_check_direct_row(r pending_approvals) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF jsonb_typeof(r.parameters) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'signoff: parameters must be a JSON object, not %',
            coalesce(jsonb_typeof(r.parameters), 'NULL') USING ERRCODE = 'check_violation';
    END IF;
    -- Every object or array with its depth (the parameters are 1), no deeper than 101.
    IF EXISTS (
        WITH RECURSIVE walk (v, depth) AS (
            SELECT r.parameters, 1
            UNION ALL
            SELECT c.value, w.depth + 1
            FROM walk AS w
            CROSS JOIN LATERAL (
                SELECT value FROM jsonb_each(CASE WHEN jsonb_typeof(w.v) = 'object' THEN w.v END)
                UNION ALL
                SELECT value FROM jsonb_array_elements(CASE WHEN jsonb_typeof(w.v) = 'array' THEN w.v END)
            ) AS c
            WHERE w.depth <= 100 AND jsonb_typeof(c.value) IN ('object', 'array')
        )
        SELECT 1 FROM walk WHERE depth > 100
    ) THEN
        RAISE EXCEPTION 'signoff: parameters are nested more than 100 levels deep, which signoff cannot read'
            USING ERRCODE = 'check_violation';
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
