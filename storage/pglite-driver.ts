import { existsSync } from 'node:fs';
import path from 'node:path';

import { PGlite } from '@electric-sql/pglite';

import { directoryOf, lockDataDir } from './data-dir-lock.js';
import type { Queryable, QueryResult, Sql } from './sql.js';

interface PGliteResult {
  rows: unknown[];
  affectedRows?: number;
}

function toResult<Row>(result: PGliteResult): QueryResult<Row> {
  return { rows: result.rows as Row[], rowCount: result.rows.length || (result.affectedRows ?? 0) };
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
   * Opens (creating if needed, unless `mustExist`) the database in `dataDir`, which this process
   * then holds until `close()`; throws DataDirectoryInUseError if another holds it, and
   * NoEmbeddedDatabaseError if it must exist and does not. `memory://` keeps it in memory.
   */
  static async open(dataDir: string, { mustExist = false } = {}): Promise<PgliteDriver> {
    const directory = directoryOf(dataDir);
    if (mustExist && directory !== undefined && !existsSync(path.join(directory, 'PG_VERSION'))) {
      throw new NoEmbeddedDatabaseError(dataDir);
    }
    const unlock = directory === undefined ? () => undefined : lockDataDir(directory, dataDir);
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

/** A data directory that was to hold a database holds none (and was left as it was). */
export class NoEmbeddedDatabaseError extends Error {
  constructor(dataDir: string) {
    super(`no embedded database in ${JSON.stringify(dataDir)}`);
    this.name = 'NoEmbeddedDatabaseError';
  }
}
