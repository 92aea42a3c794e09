-- Lets a write whose answer was lost be retried without being applied twice.

-- A start carries a random token: retrying the same start finds its own row, not a taken id.
ALTER TABLE workflows ADD COLUMN start_token text;

-- Every WAL flush records its token (and the workflows it created) in the same statement, so
-- after a lost answer the engine can tell whether the flush committed.
CREATE TABLE wal_commits (
  token     text PRIMARY KEY,
  inserted  text[] NOT NULL,
  at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wal_commits_at_idx ON wal_commits (at);

-- An event carries an id: sending it again (a retry, or the caller's own id) stores it once.
-- Consumed events are kept for an hour (consumed_at set) so that a retry arriving after the
-- workflow took the event still finds it.
ALTER TABLE inbox ADD COLUMN event_id text;
ALTER TABLE inbox ADD COLUMN consumed_at timestamptz;
CREATE UNIQUE INDEX inbox_event_id_idx ON inbox (event_id);
CREATE INDEX inbox_waiting_idx ON inbox (workflow_id, id) WHERE consumed_at IS NULL;
CREATE INDEX inbox_consumed_idx ON inbox (consumed_at) WHERE consumed_at IS NOT NULL;
