import { randomBytes } from 'node:crypto';

import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { afterEach, beforeEach } from 'vitest';

/** A database a test runs on: the embedded one, or real Postgres when DATABASE_URL is set. */
export interface Backend {
  name: 'pglite' | 'postgres';
  /** A fresh schema on this backend; `drop()` removes it. */
  schema(): Promise<TestSchema>;
}

export interface TestSchema {
  /** What to pass as `database` to createEngine/createClient. */
  database: string | PGlite;
  schema: string;
  /** Runs SQL on the test's database (outside the engine). */
  query<Row = Record<string, unknown>>(text: string, params?: unknown[]): Promise<Row[]>;
  drop(): Promise<void>;
}

let sharedPglite: Promise<PGlite> | undefined;

/** The worker's embedded database, created once (PGlite takes seconds to start). */
export function pglite(): Promise<PGlite> {
  sharedPglite ??= PGlite.create('memory://');
  return sharedPglite;
}

function schemaName(): string {
  return `t_${randomBytes(6).toString('hex')}`;
}

const pgliteBackend: Backend = {
  name: 'pglite',
  async schema() {
    const db = await pglite();
    const schema = schemaName();
    return {
      database: db,
      schema,
      async query<Row>(text: string, params?: unknown[]) {
        return (await db.query<Row>(text, params)).rows;
      },
      async drop() {
        await db.exec(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      },
    };
  },
};

function postgresBackend(url: string): Backend {
  return {
    name: 'postgres',
    async schema() {
      const schema = schemaName();
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      return {
        database: url,
        schema,
        async query<Row>(text: string, params?: unknown[]) {
          return (await pool.query(text, params)).rows as Row[];
        },
        async drop() {
          await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
          await pool.end();
        },
      };
    },
  };
}

/**
 * `TEST_SERVER_ONLY=1` leaves the embedded database out: for a second pass over the suite with
 * `DATABASE_URL`, after a first without it has run every test on the embedded database.
 */
const serverOnly = process.env.TEST_SERVER_ONLY === '1';
if (serverOnly && !process.env.DATABASE_URL) throw new Error('TEST_SERVER_ONLY=1 needs DATABASE_URL: there is no server to test on');

/** PGlite (unless `TEST_SERVER_ONLY=1`); real Postgres too when DATABASE_URL is set. */
export const backends: Backend[] = [
  ...(serverOnly ? [] : [pgliteBackend]),
  ...(process.env.DATABASE_URL ? [postgresBackend(process.env.DATABASE_URL)] : []),
];

/** Only the real-Postgres backend (for tests that need several processes on one database). */
export const serverBackends: Backend[] = backends.filter((b) => b.name === 'postgres');

/**
 * Gives every test of the enclosing `describe` a fresh schema on `backend` (dropped afterwards);
 * read it through the returned getter inside the tests.
 */
export function useSchema(backend: Backend): () => TestSchema {
  let db: TestSchema | undefined;
  beforeEach(async () => {
    db = await backend.schema();
  });
  afterEach(async () => {
    await db?.drop();
    db = undefined;
  });
  return () => {
    if (!db) throw new Error('useSchema: read the schema inside a test');
    return db;
  };
}

/**
 * Takes a lock on one of the schema's tables (Postgres only) until `release()`: with ACCESS
 * EXCLUSIVE, statements that read or write it wait; with EXCLUSIVE, only those that write it.
 */
export async function lockTable(
  db: TestSchema,
  table: string,
  mode: 'ACCESS EXCLUSIVE' | 'EXCLUSIVE' = 'ACCESS EXCLUSIVE',
): Promise<{ release(): Promise<void> }> {
  const holder = new pg.Client({ connectionString: db.database as string });
  await holder.connect();
  await holder.query('BEGIN');
  await holder.query(`LOCK TABLE "${db.schema}".${table} IN ${mode} MODE`);
  return {
    async release() {
      await holder.query('COMMIT').catch(() => undefined);
      await holder.end().catch(() => undefined);
    },
  };
}

/** Whether a statement on the schema whose text contains `fragment` is waiting for a lock. */
export async function isWaitingForLock(db: TestSchema, fragment: string): Promise<boolean> {
  const waiting = await db.query(
    `SELECT 1 FROM pg_stat_activity
     WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' AND query LIKE '%' || $2 || '%'`,
    [db.schema, fragment],
  );
  return waiting.length > 0;
}

/**
 * Flush statements of the schema that write history waiting for a lock (recognised by their start:
 * Postgres shows a statement's first kilobyte).
 */
export async function flushesWaitingForLock(db: TestSchema): Promise<number> {
  const rows = await db.query(
    `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'WITH ins_h AS%' AND query LIKE '%' || $1 || '%'`,
    [db.schema],
  );
  return rows.length;
}

/**
 * Takes a migrated schema one migration back (the last adds a column to leases), as an older
 * version left it.
 */
export async function undoLastMigration(db: TestSchema): Promise<void> {
  await db.query(`ALTER TABLE "${db.schema}".leases DROP COLUMN process`);
  await db.query(`DELETE FROM "${db.schema}".migrations WHERE version = 6`);
}
