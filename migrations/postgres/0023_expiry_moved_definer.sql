-- Moving a pending row's expiry is part of the shared table's contract, and a program
-- granted just that (`GRANT UPDATE (expires_at) ON pending_approvals`) was refused it:
-- the trigger of migration 0006 moves the expiry watermark down, and ran with the
-- program's rights, which do not reach `expiry_watermark` ("permission denied for
-- table expiry_watermark"). It runs with its owner's (signoff's) now, on a fixed
-- search_path, and does nothing but that one update.
CREATE OR REPLACE FUNCTION signoff_expiry_moved() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('UPDATE %I.expiry_watermark SET below = LEAST(below, $1) WHERE id = 1',
                   TG_TABLE_SCHEMA)
        USING NEW.expires_at;
    RETURN NEW;
END;
$$;
REVOKE ALL ON FUNCTION signoff_expiry_moved() FROM PUBLIC;
