import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';

import { PGlite } from '@electric-sql/pglite';

import type { Queryable, QueryResult, Sql } from './sql.js';

interface PGliteResult {
  rows: unknown[];
  affectedRows?: number;
}

function toResult<Row>(result: PGliteResult): QueryResult<Row> {
  return { rows: result.rows as Row[], rowCount: result.rows.length || (result.affectedRows ?? 0) };
}

/** Thrown when the embedded database's directory is open in a process already. */
export class DataDirectoryInUseError extends Error {
  constructor(dataDir: string, pid: number) {
    super(
      `the embedded database in ${JSON.stringify(dataDir)} is open in process ${pid}${pid === process.pid ? ' (this one)' : ''}; ` +
        'it belongs to one process at a time: close it there first, or share a Postgres server',
    );
    this.name = 'DataDirectoryInUseError';
  }
}

/**
 * Claims `dataDir` for this process with a lock file beside it, holding the pid. A second opener
 * would not see the first one's writes and, on close, would write over them. A lock left by a
 * process that died is taken over. Returns the release.
 */
function lockDataDir(dataDir: string): () => void {
  const lockFile = `${dataDir.replace(/[\\/]+$/, '')}.lock`;
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(lockFile, String(process.pid), { flag: 'wx' });
      return () => {
        try {
          if (readFileSync(lockFile, 'utf8') === String(process.pid)) unlinkSync(lockFile);
        } catch {
          // Gone already: nothing to release.
        }
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw error;
    }
    const holder = Number(readFileSync(lockFile, 'utf8'));
    if (Number.isInteger(holder) && holder > 0 && isAlive(holder)) throw new DataDirectoryInUseError(dataDir, holder);
    unlinkSync(lockFile);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists but belongs to someone else.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Driver over an embedded PGlite instance: Postgres compiled to WebAssembly, in this process, on
 * one connection (PGlite queues statements and transactions itself).
 */
export class PgliteDriver implements Sql {
  readonly #db: PGlite;
  readonly #owned: boolean;
  readonly #unlock: () => void;

  private constructor(db: PGlite, owned: boolean, unlock: () => void = () => undefined) {
    this.#db = db;
    this.#owned = owned;
    this.#unlock = unlock;
  }

  /**
   * Opens (creating if needed) the database in `dataDir`, which this process then holds until
   * `close()`; throws DataDirectoryInUseError if another holds it. `memory://` keeps it in memory.
   */
  static async open(dataDir: string): Promise<PgliteDriver> {
    const unlock = dataDir.includes('://') ? () => undefined : lockDataDir(dataDir);
    try {
      const db = await PGlite.create(dataDir);
      return new PgliteDriver(db, true, unlock);
    } catch (error) {
      unlock();
      throw error;
    }
  }

  /** Wraps an instance the caller owns; `close()` leaves it open. */
  static wrap(db: PGlite): PgliteDriver {
    return new PgliteDriver(db, false);
  }

  async query<Row>(text: string, params?: unknown[]): Promise<QueryResult<Row>> {
    return toResult<Row>(await this.#db.query(text, params));
  }

  async exec(script: string): Promise<void> {
    await this.#db.exec(script);
  }

  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.#db.transaction(async (tx) =>
      work({
        async query<Row>(text: string, params?: unknown[]) {
          return toResult<Row>(await tx.query(text, params));
        },
        async exec(script: string) {
          await tx.exec(script);
        },
      }),
    );
  }

  async listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>> {
    return this.#db.listen(channel, onPayload);
  }

  async close(): Promise<void> {
    try {
      if (this.#owned && !this.#db.closed) await this.#db.close();
    } finally {
      this.#unlock();
    }
  }
}
