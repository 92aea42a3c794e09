/**
 * Opening an engine or a client: what a schema needs of the database role, what a start that
 * fails midway rejects with, and that it ends the leases it claimed, so the next engine (a
 * createEngine tried again in the same process, say) takes the names at once rather than standing
 * by until they expire.
 */
import { randomBytes } from 'node:crypto';

import type { PGlite } from '@electric-sql/pglite';
import { describe, expect, it } from 'vitest';

import { createClient, createEngine, DatabaseUnavailableError, type WorkflowContext } from 'duraflow';

import { backends, serverBackends, type TestSchema, useSchema } from '../helpers/database.js';
import { openClient, quietLogger, startEngine } from '../helpers/engines.js';
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

/**
 * Starts an engine running `twice` through `proxy`, and resolves with what its start rejected
 * with (undefined, once closed again, if it started).
 */
async function startThrough(proxy: FaultProxy, db: TestSchema, options: { leaseTtlMs?: number } = {}): Promise<unknown> {
  return createEngine({
    database: proxy.url(db.database as string),
    schema: db.schema,
    logger: quietLogger,
    ...options,
    workflows: { twice },
    inlineActivities: { double: async (n: number) => 2 * n },
  }).then(
    async (engine) => engine.close(),
    (e: unknown) => e,
  );
}

describe.each(serverBackends)('a database that goes away while an engine starts, on $name', (backend) => {
  const db = useSchema(backend);

  it('rejects with DatabaseUnavailableError when the first lease claim is cut off, and keeps no connection', async () => {
    await (await openClient(db())).close();
    const proxy = await FaultProxy.start();
    try {
      // After the schema is migrated and LISTEN is set up: the claim reads the leases first.
      void proxy.cutOnNextRequest('process AS process_identity').then(() => proxy.refuse());
      const error = await startThrough(proxy, db());
      expect(error).toBeInstanceOf(DatabaseUnavailableError);
      expect(error).toMatchObject({ code: 'DURAFLOW_DATABASE_UNAVAILABLE', cause: { code: 'ECONNRESET' } });
      await waitFor(() => proxy.openConnections === 0, 'the engine to close its connections');
      expect(await db().query(`SELECT name FROM "${db().schema}".leases`)).toEqual([]);
    } finally {
      await proxy.close();
    }
  });
});

/** Long enough that an engine standing by for a lease left held would time the test out. */
const LEASE_TTL_MS = 60_000;

describe.each(serverBackends)('a start that fails after its claim, on $name', (backend) => {
  const db = useSchema(backend);

  /**
   * Starts an engine through a proxy that `fault` breaks, expecting DatabaseUnavailableError;
   * then checks the lease the failed start claimed was ended, and that an engine started next
   * holds the name and runs its workflow.
   */
  async function failThenStartAgain(fault: (proxy: FaultProxy) => void): Promise<void> {
    const client = await openClient(db());
    const proxy = await FaultProxy.start();
    try {
      fault(proxy);
      const error = await startThrough(proxy, db(), { leaseTtlMs: LEASE_TTL_MS });
      expect(error).toBeInstanceOf(DatabaseUnavailableError);
      const [left] = await client.leases();
      // The claim committed: the name was leased, and the failed start ended its lease.
      expect(left).toMatchObject({ workflowName: 'twice', isExpired: true });
      const engine = await startEngine(db(), {
        leaseTtlMs: LEASE_TTL_MS,
        workflows: { twice },
        inlineActivities: { double: async (n: number) => 2 * n },
      });
      try {
        const [taken] = await engine.leases();
        expect(taken).toMatchObject({ workflowName: 'twice', isExpired: false });
        expect(taken!.owner).not.toBe(left!.owner);
        expect(await (await engine.startWorkflow(twice, 21)).result()).toBe(42);
      } finally {
        await engine.close();
      }
    } finally {
      await proxy.close();
      await client.close();
    }
  }

  it('ends the leases when the answer to the first claim is lost after it committed', async () => {
    await failThenStartAgain((proxy) => void proxy.loseResponseTo('AS l (name, owner, epoch, expires_at, process)'));
  });

  it('ends the leases when the recovery after the claim is cut off', async () => {
    await failThenStartAgain((proxy) => void proxy.cutOnNextRequest('x.command_id, x.due_at FROM'));
  });
});
