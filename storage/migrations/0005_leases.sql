-- One row per workflow name: which engine runs that name's workflows, until when. The epoch
-- grows with each change of owner; every flush checks it (see storage/sql/leases.ts).
CREATE TABLE leases (
  name        text PRIMARY KEY,
  owner       text NOT NULL,
  epoch       bigint NOT NULL,
  expires_at  timestamptz NOT NULL
);
