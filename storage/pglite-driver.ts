import { PGlite } from '@electric-sql/pglite';

import { beginCreation, hasDatabase } from './data-dir-creation.js';
import { directoryOf, lockDataDir } from './data-dir-lock.js';
import type { Queryable, QueryResult, Sql } from './sql.js';

interface PGliteResult {
  rows: unknown[];
  affectedRows?: number;
}

function toResult<Row>(result: PGliteResult): QueryResult<Row> {
  return { rows: result.rows as Row[], rowCount: result.rows.length || (result.affectedRows ?? 0) };
}

/** Options of `PgliteDriver.open`. */
export interface OpenOptions {
  /** Refuse a directory without a database rather than make one. @default false */
  mustExist?: boolean;
  /** Run on a database this call makes, before the directory counts as holding it. */
  prepare?: (sql: Sql) => Promise<unknown>;
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
   * NoEmbeddedDatabaseError if it must exist and does not. `memory://` keeps it in memory. A
   * database this call makes in a directory gets `prepare` (the migrations) before it counts as
   * made: a start killed before then leaves one that the next start makes again.
   */
  static async open(dataDir: string, { mustExist = false, prepare }: OpenOptions = {}): Promise<PgliteDriver> {
    const directory = directoryOf(dataDir);
    if (mustExist && directory !== undefined && !hasDatabase(directory)) {
      throw new NoEmbeddedDatabaseError(dataDir);
    }
    const unlock = directory === undefined ? () => undefined : lockDataDir(directory, dataDir);
    let db: PGlite | undefined;
    try {
      const finishCreation = directory === undefined ? undefined : beginCreation(directory);
      db = await PGlite.create(dataDir);
      const driver = new PgliteDriver(db, true, unlock);
      if (finishCreation) {
        await prepare?.(driver);
        finishCreation();
      }
      return driver;
    } catch (error) {
      // The error that stopped the open is the one to report, not a failure to close after it.
      if (db && !db.closed) await db.close().catch(() => undefined);
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

  /** Statements run in this process, over no connection that can stop answering: none to drop. */
  abort(): void {}

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
