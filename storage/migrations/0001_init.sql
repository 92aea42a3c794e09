-- Runs with search_path set to the engine's schema, inside the migration transaction.

CREATE TABLE workflows (
  id            text PRIMARY KEY,
  name          text NOT NULL,
  version       text NOT NULL,
  status        text NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
  input         text,                      -- JSON text; NULL stands for undefined
  result        text,
  error         text,                      -- SerializedFailure as JSON; also set while parked
  vars          text NOT NULL DEFAULT '{}',
  start_at      timestamptz NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  started_at    timestamptz,
  completed_at  timestamptz
);
CREATE INDEX workflows_pending_idx ON workflows (start_at) WHERE status = 'pending';

-- Append-only. seq is contiguous per workflow; activation groups the rows one step wrote. The
-- primary key is what fences a writer with a stale view of a workflow.
CREATE TABLE history (
  workflow_id  text NOT NULL,
  seq          integer NOT NULL,
  activation   integer NOT NULL,
  type         text NOT NULL,
  command_id   integer,
  payload      text,
  at           timestamptz NOT NULL,
  PRIMARY KEY (workflow_id, seq)
);

-- Durable timers: workflow sleeps, event-wait timeouts and delayed starts (command_id 0).
CREATE TABLE timers (
  workflow_id  text NOT NULL,
  command_id   integer NOT NULL,
  due_at       timestamptz NOT NULL,
  PRIMARY KEY (workflow_id, command_id)
);
CREATE INDEX timers_due_idx ON timers (due_at);

-- Retry state of activities whose first attempt failed; visible_at is the durable retry timer.
-- (An activity's first attempt is known from its ActivityScheduled event.)
CREATE TABLE activity_tasks (
  workflow_id   text NOT NULL,
  command_id    integer NOT NULL,
  name          text NOT NULL,
  input         text,
  options       text NOT NULL,
  attempt       integer NOT NULL,
  visible_at    timestamptz NOT NULL,
  scheduled_at  timestamptz NOT NULL,
  last_failure  text,
  PRIMARY KEY (workflow_id, command_id)
);

-- External events written by any process, deleted by the step that consumes them.
CREATE TABLE inbox (
  id           bigserial PRIMARY KEY,
  workflow_id  text NOT NULL,
  name         text NOT NULL,
  payload      text,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_workflow_idx ON inbox (workflow_id, id);
