-- Where the holder of each lease runs (boot id, pid namespace, pid, start time; null where the
-- system does not tell): an engine on the same machine that finds the holder's process ended
-- takes the lease at once rather than at its expiry (see engine/process-identity.ts).
ALTER TABLE leases ADD COLUMN process text;
