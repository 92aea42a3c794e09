/**
 * Opening an engine or a client: what a schema needs of the database role, and what a start
 * that fails midway rejects with.
 */
import { randomBytes } from 'node:crypto';

import type { PGlite } from '@electric-sql/pglite';
import { describe, expect, it } from 'vitest';

import { createClient, createEngine, DatabaseUnavailableError, type WorkflowContext } from 'duraflow';

import { backends, serverBackends, type TestSchema, useSchema } from '../helpers/database.js';
import { openClient, quietLogger } from '../helpers/engines.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { waitFor } from '../helpers/wait-for.js';

async function twice(ctx: WorkflowContext, n: number): Promise<number> {
  return ctx.activities<{ double(n: number): Promise<number> }>().double(n);
}

/**
 * Runs `work` with a `database` option whose statements run as `role`: on a server, a URL that
 * sets the role when it connects; on the embedded database, its one connection switched to the
 * role meanwhile (the test's own queries go through it too, so they wait until after).
 */
async function asRole(db: TestSchema, role: string, work: (database: string | PGlite) => Promise<void>): Promise<void> {
  if (typeof db.database === 'string') {
    const url = new URL(db.database);
    url.searchParams.set('options', `-c role=${role}`);
    return work(url.toString());
  }
  await db.query(`SET ROLE ${role}`);
  try {
    await work(db.database);
  } finally {
    await db.query('RESET ROLE');
  }
}

describe.each(backends)('a role that may not create schemas, on $name', (backend) => {
  const db = useSchema(backend);

  it('opens on a schema made for it, creating its tables there, and runs workflows', async () => {
    const { schema } = db();
    const role = `duraflow_test_${randomBytes(4).toString('hex')}`;
    // No CREATE on the database (Postgres grants it to no one by default): it owns its schema only.
    await db().query(`CREATE ROLE ${role} NOLOGIN`);
    try {
      await db().query(`CREATE SCHEMA "${schema}" AUTHORIZATION ${role}`);
      await asRole(db(), role, async (database) => {
        const client = await createClient({ database, schema, logger: quietLogger });
        await client.close();
        const engine = await createEngine({
          database,
          schema,
          logger: quietLogger,
          workflows: { twice },
          inlineActivities: { double: async (n: number) => 2 * n },
        });
        try {
          expect(await (await engine.startWorkflow(twice, 21)).result()).toBe(42);
        } finally {
          await engine.close();
        }
      });
      const owners = await db().query<{ tableowner: string }>(`SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = $1`, [schema]);
      expect(owners).toEqual([{ tableowner: role }]);
    } finally {
      await db().query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await db().query(`DROP ROLE ${role}`);
    }
  });
});

describe.each(serverBackends)('a database that goes away while an engine starts, on $name', (backend) => {
  const db = useSchema(backend);

  it('rejects with DatabaseUnavailableError when the first lease claim is cut off, and keeps no connection', async () => {
    await (await openClient(db())).close();
    const proxy = await FaultProxy.start();
    try {
      // After the schema is migrated and LISTEN is set up: the claim reads the leases first.
      void proxy.cutOnNextRequest('process AS process_identity').then(() => proxy.refuse());
      const error = await createEngine({
        database: proxy.url(db().database as string),
        schema: db().schema,
        logger: quietLogger,
        workflows: { twice },
        inlineActivities: { double: async (n: number) => 2 * n },
      }).then(
        async (engine) => engine.close(),
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(DatabaseUnavailableError);
      expect(error).toMatchObject({ code: 'DURAFLOW_DATABASE_UNAVAILABLE', cause: { code: 'ECONNRESET' } });
      await waitFor(() => proxy.openConnections === 0, 'the engine to close its connections');
      expect(await db().query(`SELECT name FROM "${db().schema}".leases`)).toEqual([]);
    } finally {
      await proxy.close();
    }
  });
});
