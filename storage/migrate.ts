import { readdir, readFile } from 'node:fs/promises';

import { pause, retryDelayMs } from './backoff.js';
import { isAlreadyThere, isLockTimeout } from './pg-errors.js';
import { advisoryLockHolders, type LockHolder, tableLockHolders } from './sql/lock-holders.js';
import type { Queryable, Sql, Tables } from './sql.js';

const MIGRATIONS_DIR = new URL('./migrations/', import.meta.url);

interface Migration {
  version: number;
  name: string;
  sql: string;
}

async function loadMigrations(): Promise<Migration[]> {
  const files = (await readdir(MIGRATIONS_DIR)).filter((f) => /^\d{4}_.+\.sql$/.test(f)).sort();
  return Promise.all(
    files.map(async (name) => ({
      version: Number(name.slice(0, 4)),
      name,
      sql: await readFile(new URL(name, MIGRATIONS_DIR), 'utf8'),
    })),
  );
}

/** The version a schema has once every one of `migrations` is applied. */
function newestOf(migrations: readonly Migration[]): number {
  return Math.max(...migrations.map((m) => m.version));
}

/**
 * The schema holds tables duraflow did not make (another application's or tool's, in a schema
 * they share): nothing is read from them or written to the schema.
 */
export class ForeignSchemaError extends Error {
  constructor(schema: string, what: string) {
    super(`schema "${schema}" ${what}: give duraflow a schema that no other tool or application uses`);
    this.name = 'ForeignSchemaError';
  }
}

/** The columns duraflow's `migrations` table has, with their types (a later version may add more). */
const MIGRATIONS_COLUMNS: readonly string[] = ['applied_at timestamp with time zone', 'name text', 'version integer'];

/** How duraflow names a migration: its file's name, which starts with its version. */
const MIGRATION_NAME = /^(\d{4})_.+\.sql$/;

/**
 * The versions applied to the schema, read from its `migrations` table; undefined if it has none.
 * Refuses a table that is not duraflow's (another tool's in a shared schema, `public` say), which
 * it could otherwise take for its own record and write into. The columns are read from the
 * catalog, which shows every one whatever the caller may read.
 */
async function appliedVersions(sql: Queryable, tables: Tables, migrations: readonly Migration[]): Promise<number[] | undefined> {
  const { rows } = await sql.query<{ is_table: boolean; col: string | null }>(
    `SELECT c.relkind IN ('r', 'p') AS is_table, a.attname || ' ' || format_type(a.atttypid, a.atttypmod) AS col
     FROM pg_catalog.pg_class c
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
     WHERE n.nspname = $1 AND c.relname = 'migrations'
     ORDER BY col`,
    [tables.schema],
  );
  if (rows.length === 0) return undefined;
  const columns = rows.map((row) => row.col).filter((col): col is string => col !== null);
  if (!rows[0]!.is_table || !MIGRATIONS_COLUMNS.every((col) => columns.includes(col))) {
    throw new ForeignSchemaError(tables.schema, `has a "migrations" that is not duraflow's table (its columns are ${columns.join(', ') || 'none'})`);
  }
  const applied = await sql.query<{ version: number; name: string }>(`SELECT version, name FROM ${tables.migrations} ORDER BY version`);
  for (const { version, name } of applied.rows) {
    const ours = migrations.find((m) => m.version === version);
    const named = MIGRATION_NAME.exec(name);
    if (ours ? ours.name !== name : !named || Number(named[1]) !== version) {
      throw new ForeignSchemaError(
        tables.schema,
        `has a table "migrations" that is not duraflow's (its version ${version} is ${JSON.stringify(name)}${ours ? `, not ${JSON.stringify(ours.name)}` : ''})`,
      );
    }
  }
  return applied.rows.map((row) => row.version);
}

/** How far a schema is migrated; `applied` is undefined when it holds no duraflow tables. */
export interface MigrationState {
  applied: number | undefined;
  newest: number;
}

/** What a try of the migrations was waiting for when it gave up on a lock. */
type LockWait = { kind: 'advisory' } | { kind: 'table'; step: string };

/**
 * The migrations waited `lockWaitMs` for a lock another session holds and gave up. Internal: the
 * engine and the client reject with DatabaseUnavailableError and this message.
 */
export class MigrationLockError extends Error {
  readonly holders: readonly LockHolder[];
  constructor(schema: string, wait: LockWait, lockWaitMs: number, holders: readonly LockHolder[]) {
    const what =
      wait.kind === 'advisory'
        ? `the migration lock of schema "${schema}" (held while another duraflow process migrates it)`
        : `a table lock that ${wait.step} needs`;
    const byPid = new Map<number, LockHolder[]>();
    for (const holder of holders) {
      const locks = byPid.get(holder.pid);
      if (locks) locks.push(holder);
      else byPid.set(holder.pid, [holder]);
    }
    const who = [...byPid.values()].map((locks) => {
      const { pid, applicationName, state } = locks[0]!;
      const about = [applicationName, state].filter((part): part is string => !!part).join(', ');
      const held = locks.map((lock) => `${lock.mode}${lock.relation ? ` on ${lock.relation}` : ''}`).join(', ');
      return `pid ${pid}${about ? ` (${about})` : ''} with ${held}`;
    });
    super(
      `the migrations waited ${lockWaitMs} ms (databaseRetryMs) for ${what}, which another session holds: ${
        who.join('; ') || 'it was gone by the time it was looked up'
      }; start again once it is released`,
    );
    this.name = 'MigrationLockError';
    this.holders = holders;
  }
}

/**
 * How long one try waits for the migration lock: below the driver's 30 s read timeout, after
 * which a statement fails as if the database were gone.
 */
const ADVISORY_WAIT_MS = 20_000;

/**
 * How long one try waits for a table lock a migration statement needs before giving way. Short:
 * an ALTER waiting in the lock queue (behind a pg_dump's ACCESS SHARE, say) holds up every
 * statement on that table queued after it, a running engine's flushes included.
 */
const TABLE_LOCK_WAIT_MS = 1_000;

/** The key of the advisory lock that serialises the migrators of `schema`. */
function migrationLockKey(schema: string): string {
  return `duraflow:${schema}`;
}

/** `ms` as a `lock_timeout` value; never 0, which would mean no limit. */
function lockTimeout(ms: number): string {
  return `${Math.max(1, Math.ceil(ms))}ms`;
}

/** Which lock a try is waiting for, set by the try before each wait. */
interface Progress {
  waitingFor?: LockWait;
}

/** One try, in a transaction of its own, that gives up on a lock at its `lock_timeout`. */
type Try<T> = (tx: Queryable, progress: Progress) => Promise<T>;

/**
 * Runs `once` in a transaction, again each time it gives up on a lock, until `deadline`; then
 * fails with MigrationLockError naming the sessions holding the lock.
 */
async function withLockWaits<T>(sql: Sql, tables: Tables, lockWaitMs: number, deadline: number, once: Try<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const progress: Progress = {};
    try {
      return await sql.transaction((tx) => once(tx, progress));
    } catch (error) {
      const wait = progress.waitingFor;
      if (!isLockTimeout(error) || wait === undefined) throw error;
      const remainingMs = deadline - Date.now();
      if (remainingMs <= 0) {
        const key = migrationLockKey(tables.schema);
        const holders = await (wait.kind === 'advisory' ? advisoryLockHolders(sql, key) : tableLockHolders(sql, tables.schema)).catch(
          () => [],
        );
        throw new MigrationLockError(tables.schema, wait, lockWaitMs, holders);
      }
      // Out of the lock queue for a moment, so the statements queued behind this one get through.
      await pause(Math.min(retryDelayMs(attempt, 50, 1_000), remainingMs));
    }
  }
}

/**
 * Sets how long the statements after it in the transaction wait for a table lock. Past the
 * deadline it still gets a short try: a running engine holds one briefly.
 */
async function waitForTableLocks(tx: Queryable, deadline: number): Promise<void> {
  // Scoped to this transaction (set_config's third argument).
  await tx.query(`SELECT set_config('lock_timeout', $1, true)`, [
    lockTimeout(Math.max(100, Math.min(deadline - Date.now(), TABLE_LOCK_WAIT_MS))),
  ]);
}

/** The applied versions, read without the migration lock (see `migrationState`). */
function readApplied(
  sql: Sql,
  tables: Tables,
  migrations: readonly Migration[],
  lockWaitMs: number,
  deadline: number,
): Promise<number[] | undefined> {
  return withLockWaits(sql, tables, lockWaitMs, deadline, async (tx, progress) => {
    await waitForTableLocks(tx, deadline);
    progress.waitingFor = { kind: 'table', step: 'reading the applied migrations' };
    return appliedVersions(tx, tables, migrations);
  });
}

/**
 * Reads how far `tables.schema` is migrated, writing nothing (not even the schema) and taking no
 * migration lock. A lock on the `migrations` table (a session that locked or alters it) is waited
 * for `lockWaitMs` at most, as in `migrate`; then it fails with MigrationLockError.
 */
export async function migrationState(sql: Sql, tables: Tables, lockWaitMs: number): Promise<MigrationState> {
  const migrations = await loadMigrations();
  const newest = newestOf(migrations);
  const versions = await readApplied(sql, tables, migrations, lockWaitMs, Date.now() + lockWaitMs);
  return { applied: versions?.length ? Math.max(...versions) : undefined, newest };
}

/**
 * Brings `tables.schema` up to the newest migration. Forward-only and idempotent; an advisory
 * lock keyed by the schema name serialises engines that start together. Returns where the schema
 * now is (further than this version's newest if a newer version migrated it).
 *
 * A schema that has every migration of this version is read as such without the lock: in a
 * rolling deploy, an engine of the old version that starts while the new one migrates (for as
 * long as that takes) does not wait for it. Only when a migration is pending is the lock taken
 * and the schema read again under it.
 *
 * Waiting for a lock, the migration lock of a migrator at work or a table lock that a pending
 * migration's statement needs (an open transaction or a `pg_dump` that read the table), goes on
 * for `lockWaitMs` at most, in tries that roll back and start again (a table lock is waited for a
 * second at a time); then it fails with MigrationLockError naming the sessions holding the lock.
 * A migration's statements themselves have no read timeout: a table rewrite may take its time.
 */
export async function migrate(sql: Sql, tables: Tables, lockWaitMs: number): Promise<MigrationState> {
  const migrations = await loadMigrations();
  const newest = newestOf(migrations);
  const deadline = Date.now() + lockWaitMs;
  const versions = await readApplied(sql, tables, migrations, lockWaitMs, deadline);
  if (versions !== undefined && migrations.every((m) => versions.includes(m.version))) {
    return { applied: Math.max(...versions), newest };
  }
  return withLockWaits(sql, tables, lockWaitMs, deadline, (tx, progress) =>
    migrateOnce(tx, tables, migrations, deadline, progress),
  );
}

/** One try of `migrate` under the migration lock, in its transaction. */
async function migrateOnce(
  tx: Queryable,
  tables: Tables,
  migrations: readonly Migration[],
  deadline: number,
  progress: Progress,
): Promise<MigrationState> {
  const newest = newestOf(migrations);
  // Whatever the database's default: a migrator that waited on the lock must then read what the
  // holder committed, which a snapshot taken before the wait (repeatable read) would not show.
  await tx.query('SET TRANSACTION ISOLATION LEVEL READ COMMITTED');
  // Scoped to this transaction (set_config's third argument), as is search_path below.
  await tx.query(`SELECT set_config('lock_timeout', $1, true)`, [lockTimeout(Math.min(deadline - Date.now(), ADVISORY_WAIT_MS))]);
  progress.waitingFor = { kind: 'advisory' };
  await tx.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [migrationLockKey(tables.schema)]);
  await waitForTableLocks(tx, deadline);
  progress.waitingFor = { kind: 'table', step: 'reading the applied migrations' };
  // CREATE SCHEMA checks for CREATE on the database even when the schema exists, which a role
  // given a schema of its own (`CREATE SCHEMA … AUTHORIZATION`) need not have.
  const existing = await tx.query(`SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1`, [tables.schema]);
  if (existing.rows.length === 0) await tx.query(`CREATE SCHEMA IF NOT EXISTS "${tables.schema}"`);
  const versions = await appliedVersions(tx, tables, migrations);
  if (versions === undefined) {
    await tx.query(
      `CREATE TABLE ${tables.migrations} (
         version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
  }
  const applied = new Set(versions);
  await tx.query(`SELECT set_config('search_path', $1, true)`, [`"${tables.schema}"`]);
  for (const migration of migrations) {
    if (applied.has(migration.version)) continue;
    progress.waitingFor = { kind: 'table', step: `migration ${migration.name}` };
    // An index build or a table rewrite may outlast the read timeout of other statements; its
    // waits for locks are bounded by lock_timeout all the same.
    await tx.exec(migration.sql, { isLong: true }).catch((error: unknown) => {
      if (!isAlreadyThere(error)) throw error;
      const reason = error instanceof Error ? error.message : String(error);
      throw new ForeignSchemaError(tables.schema, `already has what duraflow's migration ${migration.name} creates (${reason})`);
    });
    await tx.query(`INSERT INTO ${tables.migrations} (version, name) VALUES ($1, $2)`, [
      migration.version,
      migration.name,
    ]);
  }
  return { applied: Math.max(newest, ...applied), newest };
}
