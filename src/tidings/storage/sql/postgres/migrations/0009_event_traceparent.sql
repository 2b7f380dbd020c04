-- The W3C traceparent an event was sent with (the context of Tidings' "send events" span, itself
-- a child of the sender's trace), kept when tracing is on: a run's span links to it. NULL
-- otherwise, and for events stored before.
ALTER TABLE events ADD COLUMN traceparent TEXT;
