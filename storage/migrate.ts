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
    super(`schema "${schema}" ${what}: give duraflow a schema of its own (the default is "duraflow")`);
    this.name = 'ForeignSchemaError';
  }
}

/** The columns of duraflow's `migrations` table, by name. */
const MIGRATIONS_COLUMNS = 'applied_at,name,version';

/**
 * Whether the schema has a `migrations` table; refuses one that is not duraflow's (another tool's
 * in a shared schema, `public` say), which it could otherwise take for its own record.
 */
async function hasOwnMigrationsTable(sql: Queryable, tables: Tables, migrations: readonly Migration[]): Promise<boolean> {
  const { rows } = await sql.query<{ column_name: string }>(
    `SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'migrations' ORDER BY column_name`,
    [tables.schema],
  );
  if (rows.length === 0) return false;
  const columns = rows.map((row) => row.column_name).join(',');
  if (columns !== MIGRATIONS_COLUMNS) {
    throw new ForeignSchemaError(tables.schema, `has a table "migrations" that is not duraflow's (its columns are ${columns})`);
  }
  const applied = await sql.query<{ version: number; name: string }>(`SELECT version, name FROM ${tables.migrations}`);
  for (const row of applied.rows) {
    const ours = migrations.find((m) => m.version === row.version);
    if (ours && ours.name !== row.name) {
      throw new ForeignSchemaError(
        tables.schema,
        `has a table "migrations" that is not duraflow's (its version ${row.version} is ${JSON.stringify(row.name)}, not ${JSON.stringify(ours.name)})`,
      );
    }
  }
  return true;
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
  if (!(await hasOwnMigrationsTable(sql, tables, migrations))) return { applied: undefined, newest };
  const versions = await sql.query<{ applied: number | null }>(`SELECT max(version) AS applied FROM ${tables.migrations}`);
  return { applied: versions.rows[0]?.applied ?? undefined, newest };
}

/**
 * Brings `tables.schema` up to the newest migration. Forward-only and idempotent; an advisory
 * lock keyed by the schema name serialises engines that start together.
 */
export async function migrate(sql: Sql, tables: Tables): Promise<void> {
  const migrations = await loadMigrations();
  await sql.transaction(async (tx) => {
    // Whatever the database's default: a migrator that waited on the lock must then read what the
    // holder committed, which a snapshot taken before the wait (repeatable read) would not show.
    await tx.query('SET TRANSACTION ISOLATION LEVEL READ COMMITTED');
    await tx.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [`duraflow:${tables.schema}`]);
    await tx.query(`CREATE SCHEMA IF NOT EXISTS "${tables.schema}"`);
    await hasOwnMigrationsTable(tx, tables, migrations);
    await tx.query(
      `CREATE TABLE IF NOT EXISTS ${tables.migrations} (
         version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
    );
    const { rows } = await tx.query<{ version: number }>(`SELECT version FROM ${tables.migrations}`);
    const applied = new Set(rows.map((r) => r.version));
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
  });
}
