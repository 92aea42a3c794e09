import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { PGlite } from '@electric-sql/pglite';

import { describe, expect, it } from 'vitest';

import { createEngine, type WorkflowContext } from 'duraflow';

import { expectedMixed, mixed, waitsForGo } from '../fixtures/workflows.js';
import { spawnFixture } from '../helpers/child-engine.js';
import { backends, serverBackends, useSchema } from '../helpers/database.js';
import { fixtureActivities, openClient, quietLogger, readMetric, startEngine, trackedEngines } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

const run = promisify(execFile);
const cli = new URL('../../dist/bin/duraflow.js', import.meta.url).pathname;

type WhoAmI = { whoAmI(): Promise<string> };

/** Tells which engine ran it: each engine's inline `whoAmI` answers with its own name. */
async function tagged(ctx: WorkflowContext, input: { wait: boolean }): Promise<string> {
  const { whoAmI } = ctx.activities<WhoAmI>();
  if (input.wait) await ctx.waitForEvent('go');
  return whoAmI();
}

async function other(_ctx: WorkflowContext, n: number): Promise<number> {
  return n + 1;
}

const HELD = 'duraflow_leases_held';

// Several engines on one database need a server: the embedded database belongs to one process.
describe.each(serverBackends)('several engines registering the same workflows on $name', (backend) => {
  const db = useSchema(backend);
  const engineNamed = (name: string, leaseTtlMs: number) =>
    startEngine(db(), { workflows: { tagged }, inlineActivities: { whoAmI: async () => name }, leaseTtlMs });

  it('runs them on one engine; another waits, and takes over at once when the first closes', async () => {
    // A lease of a minute: only the first engine's release lets the second take over in the test's time.
    const a = await engineNamed('a', 60_000);
    const b = await engineNamed('b', 60_000);
    expect(await readMetric(a, HELD)).toBe(1);
    expect(await readMetric(b, HELD)).toBe(0);

    // Started through the waiting engine, run by the holder.
    const handles = await Promise.all(Array.from({ length: 10 }, (_, i) => b.startWorkflow(tagged, { wait: false }, { workflowId: `l-${i}` })));
    expect(await Promise.all(handles.map((h) => h.result()))).toEqual(handles.map(() => 'a'));

    const beforeClose = await b.leases();
    expect(beforeClose).toEqual([{ workflowName: 'tagged', owner: expect.stringContaining(`:${process.pid}:`), epoch: 1, expiresAt: expect.any(Date), isExpired: false }]);
    const waiting = await b.startWorkflow(tagged, { wait: true }, { workflowId: 'l-wait' });
    await waitFor(async () => (await b.inspect('l-wait')).waitingOn.events.length > 0, 'the workflow to wait on the holder');
    await a.close();
    await waitFor(async () => (await readMetric(b, HELD)) === 1, 'the second engine to take the lease', 10_000);
    await b.sendEvent('l-wait', 'go');
    expect(await waiting.result()).toBe('b');
    const [before] = beforeClose;
    const after = await b.leases();
    expect(after).toEqual([{ workflowName: 'tagged', owner: expect.any(String), epoch: 2, expiresAt: expect.any(Date), isExpired: false }]);
    expect(after[0]!.owner).not.toBe(before!.owner);
    // The CLI shows the same, from another process.
    const { stdout } = await run(process.execPath, [cli, 'leases', '--database', process.env.DATABASE_URL!, '--schema', db().schema]);
    expect(JSON.parse(stdout)).toEqual(JSON.parse(JSON.stringify(await b.leases())).map((l: object) => ({ ...l, expiresAt: expect.any(String) })));
    await b.close();
    expect((await b.leases().catch((e: Error) => e.name))).toBe('EngineClosedError');
  });

  it('takes over the workflows of an engine killed with SIGKILL once its lease expires', async () => {
    const count = 200;
    const child = spawnFixture('engine-process.js', {
      DATABASE_URL: process.env.DATABASE_URL!,
      DURAFLOW_SCHEMA: db().schema,
      START_COUNT: String(count),
      LEASE_TTL_MS: '1500',
    });
    try {
      await child.line(/^started \d+/);
      const standby = await startEngine(db(), { workflows: { mixed, waitsForGo }, activities: fixtureActivities });
      expect(await readMetric(standby, HELD)).toBe(0);
      // Killed with three quarters of its workflows somewhere in between.
      await child.line(/^quarter done/);
      child.process.kill('SIGKILL');
      expect(await child.exited).toBeNull();
      const late = await standby.startWorkflow(waitsForGo, { label: 'after the kill' });
      await waitFor(async () => (await readMetric(standby, HELD)) === 2, 'the standby to take both names over', 10_000);
      const results = await Promise.all(Array.from({ length: count }, (_, i) => standby.result<number>(`w-${i}`, { timeoutMs: 30_000 })));
      expect(results).toEqual(results.map((_, i) => expectedMixed(i)));
      await standby.sendEvent(late.workflowId, 'go', 1);
      expect(await late.result()).toEqual({ label: 'after the kill', ev: 1 });
      const startedTwice = await db().query(
        `SELECT workflow_id FROM "${db().schema}".history WHERE type IN ('WorkflowStarted', 'WorkflowCompleted') GROUP BY workflow_id, type HAVING count(*) > 1`,
      );
      expect(startedTwice).toEqual([]);
      await standby.close();
    } finally {
      child.process.kill('SIGKILL');
    }
  });

  it('writes nothing more for a name whose lease another engine took, and runs it again once it can reclaim it', async () => {
    const a = await engineNamed('a', 60_000);
    const handle = await a.startWorkflow(tagged, { wait: true }, { workflowId: 'f-1' });
    await waitFor(async () => (await a.inspect('f-1')).waitingOn.events.length > 0, 'the wait');
    const historyRows = async () =>
      (await db().query<{ n: number }>(`SELECT count(*)::int AS n FROM "${db().schema}".history WHERE workflow_id = 'f-1'`))[0]!.n;
    const before = await historyRows();
    const flushErrors = await readMetric(a, 'duraflow_wal_flush_errors_total');

    // Another engine took the name while this one stalled; this one has not renewed since.
    await db().query(`UPDATE "${db().schema}".leases SET owner = 'elsewhere', epoch = epoch + 1, expires_at = now() + interval '1 hour'`);
    // The event reaches the workflow in memory here: its step's flush is refused. So is the first
    // step of a new workflow, which is then stored as a plain start for the holder to run.
    const [started] = await Promise.all([
      a.startWorkflow(tagged, { wait: false }, { workflowId: 'f-2' }),
      a.sendEvent('f-1', 'go', 1),
    ]);
    await waitFor(async () => (await readMetric(a, HELD)) === 0, 'the engine to give the name up');
    expect(await readMetric(a, 'duraflow_wal_flush_errors_total')).toBeGreaterThan(flushErrors);
    expect(await historyRows()).toBe(before);
    expect((await a.inspect('f-1')).queuedEvents).toEqual([{ eventName: 'go', payload: 1 }]);
    expect((await a.inspect('f-2')).status).toBe('pending');

    // The other engine's lease ends (as at its close): this one takes the name back and runs on.
    await db().query(`UPDATE "${db().schema}".leases SET expires_at = now() - interval '1 second'`);
    await db().query(`SELECT pg_notify($1, 'lease')`, [`duraflow_${db().schema}`]);
    expect(await handle.result()).toBe('a');
    expect(await started.result()).toBe('a');
    expect(await readMetric(a, HELD)).toBe(1);
    await a.close();
  });

  it('runs engines of different workflow names side by side on one schema', async () => {
    const a = await engineNamed('a', 60_000);
    const b = await startEngine(db(), { workflows: { other } });
    expect([await readMetric(a, HELD), await readMetric(b, HELD)]).toEqual([1, 1]);
    const client = await openClient(db());
    const [x, y] = await Promise.all([client.startWorkflow('tagged', { wait: false }), client.startWorkflow('other', 41)]);
    expect(await x.result()).toBe('a');
    expect(await y.result()).toBe(42);
    await Promise.all([a.close(), b.close(), client.close()]);
  });
});

describe('an engine on the embedded database in a data directory', () => {
  it('takes its leases at once, whatever an earlier holder left: no other process can open the directory', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'duraflow-leases-'));
    const open = (name: string) =>
      createEngine({ dataDir, workflows: { tagged }, inlineActivities: { whoAmI: async () => name }, logger: quietLogger });
    try {
      await (await open('first')).close();
      // As a process killed while holding them would leave them: unexpired, someone else's.
      const db = new PGlite(dataDir);
      await db.query(`UPDATE duraflow.leases SET owner = 'killed', expires_at = now() + interval '1 hour'`);
      await db.close();
      const engine = await open('second');
      trackedEngines.add(engine);
      try {
        expect(await readMetric(engine, HELD)).toBe(1);
        expect(await (await engine.startWorkflow(tagged, { wait: false })).result()).toBe('second');
      } finally {
        trackedEngines.delete(engine);
        await engine.close();
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe.each(backends.filter((b) => b.name === 'pglite'))('engines sharing one PGlite instance on $name', (backend) => {
  const db = useSchema(backend);

  it('run each name on one of them, as on a server: a PGlite passed in may be shared in the process', async () => {
    const a = await startEngine(db(), { workflows: { tagged }, inlineActivities: { whoAmI: async () => 'a' }, leaseTtlMs: 60_000 });
    const b = await startEngine(db(), { workflows: { tagged }, inlineActivities: { whoAmI: async () => 'b' }, leaseTtlMs: 60_000 });
    expect([await readMetric(a, HELD), await readMetric(b, HELD)]).toEqual([1, 0]);
    expect(await (await b.startWorkflow(tagged, { wait: false })).result()).toBe('a');
    await a.close();
    await waitFor(async () => (await readMetric(b, HELD)) === 1, 'the second engine to take the lease', 10_000);
    expect(await (await b.startWorkflow(tagged, { wait: false })).result()).toBe('b');
    await b.close();
  });
});
