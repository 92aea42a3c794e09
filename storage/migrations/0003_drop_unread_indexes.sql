-- Indexes no query reads, paid for on every write: waiting events are found through
-- inbox_waiting_idx, and timers are loaded whole at start and ordered in memory.
DROP INDEX IF EXISTS inbox_workflow_idx;
DROP INDEX IF EXISTS timers_due_idx;
