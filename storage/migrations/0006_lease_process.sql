-- Where the holder of each lease runs (boot id, pid and time namespaces, pid, start time, then
-- its owner id; null where the system does not tell): an engine on the same machine that finds
-- the holder's process ended takes the lease at once rather than at its expiry (see
-- storage/process-identity.ts).
ALTER TABLE leases ADD COLUMN process text;
