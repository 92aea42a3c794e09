-- An event id deduplicates retries of one send to one workflow: the same id sent to two
-- workflows is two events.
DROP INDEX IF EXISTS inbox_event_id_idx;
CREATE UNIQUE INDEX inbox_workflow_event_id_idx ON inbox (workflow_id, event_id);
