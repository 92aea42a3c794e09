import { readdir, readFile } from 'node:fs/promises';

import type { Sql, Tables } from './sql.js';

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

/** How far a schema is migrated; `applied` is undefined when it holds no duraflow tables. */
export interface MigrationState {
  applied: number | undefined;
  newest: number;
}

/** Reads how far `tables.schema` is migrated, writing nothing (not even the schema). */
export async function migrationState(sql: Sql, tables: Tables): Promise<MigrationState> {
  const newest = Math.max(...(await loadMigrations()).map((m) => m.version));
  const { rows } = await sql.query(`SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'migrations'`, [
    tables.schema,
  ]);
  if (rows.length === 0) return { applied: undefined, newest };
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
      await tx.exec(migration.sql);
      await tx.query(`INSERT INTO ${tables.migrations} (version, name) VALUES ($1, $2)`, [
        migration.version,
        migration.name,
      ]);
    }
  });
}
