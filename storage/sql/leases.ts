/*
 * Leases: which engine runs the workflows of each name. An engine claims the names it registers;
 * a name whose lease is held by another engine and has not expired stays that engine's. Times
 * come from the database's clock, never a local one. The epoch grows each time a name changes
 * hands, and every flush of an engine checks, in its own statement, that it still holds the epoch
 * of each name it writes (`FenceParams`), so an engine that lost a name can never again write
 * under the epoch it lost: only after claiming the name back, under a new one. (An expired lease
 * that no one took is renewed by its holder under the same epoch.)
 */
import type { Queryable, Tables } from '../sql.js';

/** What a flush checks: this owner still holds each of these names at these epochs. */
export interface FenceParams {
  owner: string;
  names: string[];
  epochs: string[];
}

/**
 * A flush wrote workflows of a name whose lease this engine no longer holds; nothing of it was
 * stored. Internal: the engine handles it (the workflows are rebuilt or left to the holder).
 */
export class LeaseLostError extends Error {
  readonly code = 'DURAFLOW_LEASE_LOST';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'LeaseLostError';
  }
}

/** The epoch `owner` holds each of `names` under now, by name; a name it does not hold is absent. */
export async function heldEpochs(db: Queryable, t: Tables, owner: string, names: readonly string[]): Promise<Map<string, string>> {
  const { rows } = await db.query<{ name: string; epoch: string }>(
    `SELECT name, epoch::text AS epoch FROM ${t.leases} WHERE owner = $1 AND name = ANY($2::text[])`,
    [owner, names],
  );
  return new Map(rows.map((row) => [row.name, row.epoch]));
}

/** Who claims, and what more than expiry lets it take a lease held by another. */
export interface Claimant {
  owner: string;
  /** Where the owner runs (see `processIdentity`), stored with each lease it holds. */
  processIdentity: string | undefined;
  /** The caller knows no other engine can reach this database: every lease is taken. */
  isExclusive: boolean;
  /**
   * Holders whose process the caller saw has ended, each with the process its lease rows named
   * when the caller looked: their leases are taken, expired or not, while those rows still name
   * that process (a row rewritten since, by a renewal, is judged again at the next claim).
   */
  endedHolders: readonly EndedHolder[];
}

/** A lease holder whose process has ended, as its lease rows named it (`LeaseRow.process_identity`). */
export interface EndedHolder {
  owner: string;
  process: string;
}

/**
 * Claims or renews the leases of `names` for `claimant.owner` until `ttlMs` from now: a name is
 * taken if it has no lease, this owner holds it, its lease expired, or its holder and process are
 * among `endedHolders` (and whatever its lease, with `isExclusive`). Rows are taken in byte order of the
 * names, as flushes lock them. Returns the names now held, with their epochs (as text: bigint).
 */
export async function claimLeases(
  db: Queryable,
  t: Tables,
  names: readonly string[],
  claimant: Claimant,
  ttlMs: number,
): Promise<Map<string, string>> {
  const { owner, processIdentity, isExclusive, endedHolders } = claimant;
  const { rows } = await db.query<{ name: string; epoch: string }>(
    `INSERT INTO ${t.leases} AS l (name, owner, epoch, expires_at, process)
     SELECT n, $2, 1, now() + $3 * interval '1 millisecond', $5 FROM unnest($1::text[]) AS n
     ORDER BY n COLLATE "C"
     ON CONFLICT (name) DO UPDATE SET
       owner = excluded.owner,
       epoch = CASE WHEN l.owner = excluded.owner THEN l.epoch ELSE l.epoch + 1 END,
       expires_at = excluded.expires_at,
       process = excluded.process
     WHERE l.owner = excluded.owner OR l.expires_at <= now() OR $4::bool
        OR EXISTS (SELECT FROM unnest($6::text[], $7::text[]) AS e(owner, process) WHERE e.owner = l.owner AND e.process = l.process)
     RETURNING name, epoch::text`,
    [names, owner, ttlMs, isExclusive, processIdentity ?? null, endedHolders.map((h) => h.owner), endedHolders.map((h) => h.process)],
  );
  return new Map(rows.map((r) => [r.name, r.epoch]));
}

/** A lease as stored, with whether it has expired by the database's clock. */
export interface LeaseRow {
  name: string;
  owner: string;
  epoch: string;
  expires_at: Date;
  is_expired: boolean;
  /** Where the holder runs, if its system told (see `Claimant.processIdentity`). */
  process_identity: string | null;
}

/** Every lease of the schema, by workflow name. */
export async function readLeases(db: Queryable, t: Tables): Promise<LeaseRow[]> {
  const { rows } = await db.query<LeaseRow>(
    `SELECT name, owner, epoch::text, expires_at, expires_at <= now() AS is_expired, process AS process_identity
     FROM ${t.leases} ORDER BY name`,
  );
  return rows;
}

/**
 * Ends `owner`'s leases of `names` now, so a waiting engine can take them at once (a name it does
 * not hold is left alone); returns how many it ended.
 */
export async function releaseLeases(db: Queryable, t: Tables, names: readonly string[], owner: string): Promise<number> {
  // Rows locked in byte order, as claims take them: the two cannot deadlock.
  const { rowCount } = await db.query(
    `UPDATE ${t.leases} SET expires_at = now()
     WHERE name IN (
       SELECT name FROM ${t.leases} WHERE name = ANY($1::text[]) AND owner = $2 ORDER BY name COLLATE "C" FOR UPDATE)`,
    [names, owner],
  );
  return rowCount;
}
