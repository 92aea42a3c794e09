/*
 * Leases: which engine runs the workflows of each name. An engine claims the names it registers;
 * a name whose lease is held by another engine and has not expired stays that engine's. Times
 * come from the database's clock, never a local one. The epoch grows each time a name changes
 * hands, and every flush of an engine checks, in its own statement, that it still holds the epoch
 * of each name it writes (`FenceParams`), so an engine that lost a name can never again write
 * under the epoch it lost: only after claiming the name back, under a new one. (An expired lease
 * that no one took is renewed by its holder under the same epoch.)
 */
import type { Queryable, Sql, Tables } from '../sql.js';

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

/** Who claims, and what more than expiry lets it take a lease held by another. */
export interface Claimant {
  owner: string;
  /**
   * Where the owner runs (see `engine/process-identity.ts`; the engine adds its owner id after it),
   * stored with each lease it holds.
   */
  process: string | undefined;
  /**
   * Whether the claim may take leases another owner holds (expired ones, those of `endedOwners`,
   * and with `isExclusive` any): it then waits for every flush that read the leases table and holds
   * back those that come meanwhile (see `claimLeases`). Without it, only this owner's leases are
   * renewed and names no one ever held are taken.
   */
  takesOver: boolean;
  /** The caller knows no other engine can reach this database: every lease is taken. */
  isExclusive: boolean;
  /** Holders whose process the caller saw has ended: their leases are taken, expired or not. */
  endedOwners: readonly string[];
}

/**
 * Claims or renews the leases of `names` for `claimant.owner` until `ttlMs` from now: a name is
 * taken if it has no lease or this owner holds it; with `takesOver`, also if its lease expired, or
 * its holder is among `endedOwners` (and whatever its lease, with `isExclusive`). Returns the names
 * now held, with their epochs (as text: bigint).
 *
 * A takeover raises the epoch, which flushes check without locking rows (see `commitFenced` in
 * flush-batch.ts); it holds the leases table in ACCESS EXCLUSIVE mode for its transaction, so it
 * begins only after every statement that read the table has ended, and one that reads it later
 * sees the new epoch. Renewals take no such lock: they change no epoch. Rows are updated in byte
 * order of the names, so two claims cannot deadlock whatever the database's collation.
 */
export async function claimLeases(db: Sql, t: Tables, names: readonly string[], claimant: Claimant, ttlMs: number): Promise<Map<string, string>> {
  const { owner, process, takesOver, isExclusive, endedOwners } = claimant;
  const upsert = async (q: Queryable): Promise<Map<string, string>> => {
    const { rows } = await q.query<{ name: string; epoch: string }>(
      `INSERT INTO ${t.leases} AS l (name, owner, epoch, expires_at, process)
       SELECT n, $2, 1, now() + $3 * interval '1 millisecond', $5 FROM unnest($1::text[]) AS n
       ORDER BY n COLLATE "C"
       ON CONFLICT (name) DO UPDATE SET
         owner = excluded.owner,
         epoch = CASE WHEN l.owner = excluded.owner THEN l.epoch ELSE l.epoch + 1 END,
         expires_at = excluded.expires_at,
         process = excluded.process
       WHERE l.owner = excluded.owner
          OR ($6::bool AND (l.expires_at <= now() OR $4::bool OR l.owner = ANY($7::text[])))
       RETURNING name, epoch::text`,
      [names, owner, ttlMs, isExclusive, process ?? null, takesOver, endedOwners],
    );
    return new Map(rows.map((r) => [r.name, r.epoch]));
  };
  if (!takesOver) return upsert(db);
  return db.transaction(async (tx) => {
    await tx.query(`LOCK TABLE ${t.leases} IN ACCESS EXCLUSIVE MODE`);
    return upsert(tx);
  });
}

/** A lease as stored, with whether it has expired by the database's clock. */
export interface LeaseRow {
  name: string;
  owner: string;
  epoch: string;
  expires_at: Date;
  is_expired: boolean;
  /** Where the holder runs, if its system told (see `Claimant.process`). */
  process: string | null;
}

/** Every lease of the schema, by workflow name. */
export async function readLeases(db: Queryable, t: Tables): Promise<LeaseRow[]> {
  const { rows } = await db.query<LeaseRow>(
    `SELECT name, owner, epoch::text, expires_at, expires_at <= now() AS is_expired, process FROM ${t.leases} ORDER BY name`,
  );
  return rows;
}

/** Ends `owner`'s leases of `names` now, so a waiting engine can take them at once. */
export async function releaseLeases(db: Queryable, t: Tables, names: readonly string[], owner: string): Promise<void> {
  await db.query(`UPDATE ${t.leases} SET expires_at = now() WHERE name = ANY($1::text[]) AND owner = $2`, [names, owner]);
}
