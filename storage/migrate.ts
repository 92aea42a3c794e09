import { readdir, readFile } from 'node:fs/promises';

import { isAlreadyThere } from './pg-errors.js';
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

/** Reads how far `tables.schema` is migrated, writing nothing (not even the schema). */
export async function migrationState(sql: Sql, tables: Tables): Promise<MigrationState> {
  const migrations = await loadMigrations();
  const newest = Math.max(...migrations.map((m) => m.version));
  const versions = await appliedVersions(sql, tables, migrations);
  return { applied: versions?.length ? Math.max(...versions) : undefined, newest };
}

/**
 * Brings `tables.schema` up to the newest migration. Forward-only and idempotent; an advisory
 * lock keyed by the schema name serialises engines that start together. Returns where the schema
 * now is (further than this version's newest if a newer version migrated it).
 */
export async function migrate(sql: Sql, tables: Tables): Promise<MigrationState> {
  const migrations = await loadMigrations();
  const newest = Math.max(...migrations.map((m) => m.version));
  return sql.transaction(async (tx) => {
    // Whatever the database's default: a migrator that waited on the lock must then read what the
    // holder committed, which a snapshot taken before the wait (repeatable read) would not show.
    await tx.query('SET TRANSACTION ISOLATION LEVEL READ COMMITTED');
    await tx.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [`duraflow:${tables.schema}`]);
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
    // Scoped to this transaction, so a caller's own session settings are untouched.
    await tx.query(`SELECT set_config('search_path', $1, true)`, [`"${tables.schema}"`]);
    for (const migration of migrations) {
      if (applied.has(migration.version)) continue;
      await tx.exec(migration.sql).catch((error: unknown) => {
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
  });
}
