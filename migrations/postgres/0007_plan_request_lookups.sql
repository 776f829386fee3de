-- signoff_pending_requests plans its lookup on every call. A plpgsql function keeps
-- the plans of its statements for the life of the connection, and the writer's
-- connection lives as long as the server: a plan made while request_keys was small
-- (a fresh database) scans the whole table, and kept doing so as the table grew until
-- the next ANALYZE. A plan made per call is sized by the table as it is now, so it
-- looks each key up through the primary key once the table is more than a few pages.
ALTER FUNCTION signoff_pending_requests(TEXT[], TEXT[], TEXT[])
    SET plan_cache_mode = force_custom_plan;
