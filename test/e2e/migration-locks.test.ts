/**
 * Migrations that need a lock another session holds: the advisory lock of a migrator still at
 * work is waited for, within `databaseRetryMs`, by a start with a migration pending (one on an
 * up-to-date schema does not take it); a table lock (a `pg_dump`, an open transaction) that a
 * pending migration's ALTER, or the read of the applied migrations, waits behind fails the start
 * with DatabaseUnavailableError naming the holder, not a read timeout.
 */
import pg from 'pg';
import { describe, expect, it } from 'vitest';

import { type Client, createClient, createEngine, DatabaseUnavailableError } from 'duraflow';

import { backends, serverBackends, type TestSchema, undoLastMigration, useSchema } from '../helpers/database.js';
import { quietLogger } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

/** Another session on the test's database, and its backend pid. */
async function otherSession(db: TestSchema): Promise<{ session: pg.Client; pid: number }> {
  const session = new pg.Client({ connectionString: db.database as string, application_name: 'lock-holder' });
  await session.connect();
  const { rows } = await session.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  return { session, pid: rows[0]!.pid };
}

function open(db: TestSchema, databaseRetryMs: number, migrate = true): Promise<Client> {
  return createClient({ database: db.database, schema: db.schema, logger: quietLogger, databaseRetryMs, maxConnections: 1, migrate });
}

async function rejection(opening: Promise<Client>): Promise<unknown> {
  return opening.then(
    async (client) => {
      await client.close();
      return undefined;
    },
    (e: unknown) => e,
  );
}

/** Migrates the schema, then leaves it one migration behind. */
async function oneMigrationBehind(db: TestSchema): Promise<void> {
  await (await open(db, 10_000)).close();
  await undoLastMigration(db);
}

describe.each(serverBackends)('migrations waiting on a lock, on $name', (backend) => {
  const db = useSchema(backend);

  it('fails with DatabaseUnavailableError naming the session whose table lock an ALTER waited for, and migrates once it is released', async () => {
    await oneMigrationBehind(db());
    const { session, pid } = await otherSession(db());
    try {
      // An open transaction that read the table (as pg_dump does) holds ACCESS SHARE on it.
      await session.query('BEGIN');
      await session.query(`SELECT count(*) FROM "${db().schema}".leases`);
      const error = await rejection(open(db(), 1_000));
      expect(error).toBeInstanceOf(DatabaseUnavailableError);
      expect(error).toMatchObject({ code: 'DURAFLOW_DATABASE_UNAVAILABLE' });
      const { message } = error as Error;
      expect(message).toContain('0006_lease_process.sql');
      expect(message).toContain(`pid ${pid}`);
      expect(message).toContain('lock-holder');
      expect(message).toContain(`"${db().schema}".leases`);
      expect(message).not.toContain("read timeout");
      // Nothing of the migration was kept.
      expect(await db().query(`SELECT max(version) AS version FROM "${db().schema}".migrations`)).toEqual([{ version: 5 }]);
      await session.query('COMMIT');
      await (await open(db(), 1_000)).close();
      const columns = await db().query(
        `SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'leases' AND column_name = 'process'`,
        [db().schema],
      );
      expect(columns).toEqual([{ column_name: 'process' }]);
    } finally {
      await session.end();
    }
  });

  it('fails with DatabaseUnavailableError naming the session that holds the migration lock past databaseRetryMs, and opens once it is released', async () => {
    await oneMigrationBehind(db());
    const { session, pid } = await otherSession(db());
    try {
      await session.query('SELECT pg_advisory_lock(hashtext($1))', [`duraflow:${db().schema}`]);
      const error = await rejection(open(db(), 1_000));
      expect(error).toBeInstanceOf(DatabaseUnavailableError);
      const { message } = error as Error;
      expect(message).toContain('migration lock');
      expect(message).toContain(`pid ${pid}`);
      expect(message).not.toContain("read timeout");
      await session.query('SELECT pg_advisory_unlock(hashtext($1))', [`duraflow:${db().schema}`]);
      await (await open(db(), 1_000)).close();
    } finally {
      await session.end();
    }
  });

  it('waits for a migrator that holds the migration lock and opens when it is done', async () => {
    await oneMigrationBehind(db());
    const { session, pid } = await otherSession(db());
    try {
      await session.query('SELECT pg_advisory_lock(hashtext($1))', [`duraflow:${db().schema}`]);
      const opening = open(db(), 30_000);
      opening.catch(() => undefined);
      // The client is seen queued for the lock (not failed, not through) before it is released.
      await waitFor(async () => {
        const waiting = await db().query(`SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, [pid]);
        return waiting.length > 0;
      }, 'the client to wait for the migration lock');
      await session.query('SELECT pg_advisory_unlock(hashtext($1))', [`duraflow:${db().schema}`]);
      await (await opening).close();
      expect(await db().query(`SELECT version FROM "${db().schema}".migrations WHERE version = 6`)).toEqual([{ version: 6 }]);
    } finally {
      await session.end();
    }
  });

  it('opens an engine and a client on an up-to-date schema while another session holds the migration lock', async () => {
    await (await open(db(), 10_000)).close();
    const { session } = await otherSession(db());
    try {
      // As a newer version's long migration would hold it in a rolling deploy.
      await session.query('SELECT pg_advisory_lock(hashtext($1))', [`duraflow:${db().schema}`]);
      await (await open(db(), 1_000)).close();
      const engine = await createEngine({
        database: db().database,
        schema: db().schema,
        workflows: {},
        logger: quietLogger,
        databaseRetryMs: 1_000,
      });
      await engine.close();
    } finally {
      await session.end();
    }
  });

  it('fails with DatabaseUnavailableError naming the session that locked the migrations table, with migrate on or off', async () => {
    await (await open(db(), 10_000)).close();
    const { session, pid } = await otherSession(db());
    try {
      await session.query('BEGIN');
      await session.query(`LOCK TABLE "${db().schema}".migrations IN ACCESS EXCLUSIVE MODE`);
      for (const migrate of [true, false]) {
        const error = await rejection(open(db(), 1_000, migrate));
        expect(error).toBeInstanceOf(DatabaseUnavailableError);
        const { message } = error as Error;
        expect(message).toContain('reading the applied migrations');
        expect(message).toContain(`pid ${pid}`);
        expect(message).toContain(`AccessExclusiveLock on "${db().schema}".migrations`);
      }
      await session.query('COMMIT');
      await (await open(db(), 1_000, false)).close();
    } finally {
      await session.end();
    }
  });
});

describe.each(backends)('several migrators at once, on $name', (backend) => {
  const db = useSchema(backend);

  it('all open a schema one migration behind, which is migrated once', async () => {
    await oneMigrationBehind(db());
    const opened = await Promise.allSettled(Array.from({ length: 4 }, () => open(db(), 5_000)));
    for (const o of opened) if (o.status === 'fulfilled') await o.value.close();
    expect(opened.filter((o) => o.status === 'rejected').map((o) => String((o as PromiseRejectedResult).reason))).toEqual([]);
    expect(await db().query(`SELECT version FROM "${db().schema}".migrations WHERE version = 6`)).toEqual([{ version: 6 }]);
  });
});
