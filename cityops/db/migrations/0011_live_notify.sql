-- Live feed (api/live.py): every new alert event is announced on the channel
-- cityops_alert_events (once per inserting statement, so a bulk insert is one notification), so
-- an API process pushes alert changes as they commit instead of polling. NOTIFY is delivered only
-- after the inserting transaction commits; the listener reads the rows back (ids above the last
-- one it sent), so a missed notification (listener reconnecting) is caught up by its next query.

CREATE OR REPLACE FUNCTION cityops_notify_alert_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cityops_alert_events', '');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS alert_events_notify ON alert_events;
CREATE TRIGGER alert_events_notify
    AFTER INSERT ON alert_events
    FOR EACH STATEMENT EXECUTE FUNCTION cityops_notify_alert_event();
