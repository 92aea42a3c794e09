import { describe, expect, it } from 'vitest';

import type { Engine, WorkflowContext, WorkflowHandle } from 'duraflow';

import { expectedMixed, mixed, waitsForGo } from '../fixtures/workflows.js';
import { type Child, spawnFixture } from '../helpers/child-engine.js';
import { runCli } from '../helpers/cli.js';
import { backends, flushesWaitingForLock, lockTable, serverBackends, useSchema } from '../helpers/database.js';
import { fixtureActivities, openClient, readMetric, startEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';


type WhoAmI = { whoAmI(): Promise<string> };

/** Tells which engine ran it: each engine's inline `whoAmI` answers with its own name. */
async function tagged(ctx: WorkflowContext, input: { wait: boolean }): Promise<string> {
  const { whoAmI } = ctx.activities<WhoAmI>();
  if (input.wait) await ctx.waitForEvent('go');
  return whoAmI();
}

/** `tagged` under a second name, so one engine holds two names. */
async function taggedToo(ctx: WorkflowContext, input: { wait: boolean }): Promise<string> {
  return tagged(ctx, input);
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
    const { code, stdout } = await runCli(['leases', '--database', process.env.DATABASE_URL!, '--schema', db().schema]);
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual(JSON.parse(JSON.stringify(await b.leases())).map((l: object) => ({ ...l, expiresAt: expect.any(String) })));
    await b.close();
    expect((await b.leases().catch((e: Error) => e.name))).toBe('EngineClosedError');
  });

  /**
   * Runs `test` beside an engine in a child process, once it has `count` workflows under way; the
   * child is killed afterwards, whatever the test got to.
   */
  async function withChildEngine(count: number, leaseTtlMs: number, test: (child: Child) => Promise<void>): Promise<void> {
    const child = spawnFixture('engine-process.js', {
      DATABASE_URL: process.env.DATABASE_URL!,
      DURAFLOW_SCHEMA: db().schema,
      START_COUNT: String(count),
      LEASE_TTL_MS: String(leaseTtlMs),
    });
    try {
      await child.line(/^started \d+/);
      await test(child);
    } finally {
      child.process.kill('SIGKILL');
    }
  }

  /** Every workflow the child started ends with the right result, each started and completed once. */
  async function expectFinished(engine: Engine, count: number): Promise<void> {
    const results = await Promise.all(Array.from({ length: count }, (_, i) => engine.result<number>(`w-${i}`, { timeoutMs: 30_000 })));
    expect(results).toEqual(results.map((_, i) => expectedMixed(i)));
    const twice = await db().query(
      `SELECT workflow_id FROM "${db().schema}".history WHERE type IN ('WorkflowStarted', 'WorkflowCompleted') GROUP BY workflow_id, type HAVING count(*) > 1`,
    );
    expect(twice).toEqual([]);
  }

  /**
   * Kills the child once a quarter of its workflows are done, runs `afterKill`, and waits for
   * `standby` to hold both names; tells whether that came before any of the child's leases
   * expired, and whether after all of them had.
   */
  async function killAndAwaitTakeover(
    child: Child,
    standby: Engine,
    afterKill: () => Promise<void> = async () => undefined,
  ): Promise<{ isBeforeAnyExpiry: boolean; isAfterEveryExpiry: boolean }> {
    await child.line(/^quarter done/);
    const [bounds] = await db().query<{ first: Date; last: Date }>(
      `SELECT min(expires_at) AS first, max(expires_at) AS last FROM "${db().schema}".leases`,
    );
    child.process.kill('SIGKILL');
    expect(await child.exited).toBeNull();
    await afterKill();
    await waitFor(async () => (await readMetric(standby, HELD)) === 2, 'the standby to take both names over', 10_000);
    const [when] = await db().query<{ early: boolean; late: boolean }>(
      `SELECT now() < $1::timestamptz AS early, now() >= $2::timestamptz AS late`,
      [bounds!.first, bounds!.last],
    );
    return { isBeforeAnyExpiry: when!.early, isAfterEveryExpiry: when!.late };
  }

  it('takes over the workflows of an engine on another machine killed with SIGKILL once its lease expires', async () => {
    const count = 200;
    // A client migrates the schema, so the trigger below has its table.
    await (await openClient(db())).close();
    // The child's leases say it runs on another boot of another machine, where this process
    // cannot see whether it ended: only expiry hands its names on.
    await db().query(`
      CREATE FUNCTION "${db().schema}".elsewhere() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN NEW.process := 'another-boot' || substr(NEW.process, position(' ' in NEW.process)); RETURN NEW; END $$;
      CREATE TRIGGER elsewhere BEFORE INSERT OR UPDATE ON "${db().schema}".leases FOR EACH ROW
      WHEN (NEW.owner NOT LIKE '%:${process.pid}:%') EXECUTE FUNCTION "${db().schema}".elsewhere()`);
    await withChildEngine(count, 1500, async (child) => {
      const standby = await startEngine(db(), { workflows: { mixed, waitsForGo }, activities: fixtureActivities });
      expect(await readMetric(standby, HELD)).toBe(0);
      // Killed with three quarters of its workflows somewhere in between; a workflow is started
      // through the standby before it takes over.
      let late: WorkflowHandle | undefined;
      const takeover = await killAndAwaitTakeover(child, standby, async () => {
        late = await standby.startWorkflow(waitsForGo, { label: 'after the kill' });
      });
      expect(takeover.isAfterEveryExpiry).toBe(true);
      await expectFinished(standby, count);
      await standby.sendEvent(late!.workflowId, 'go', 1);
      expect(await late!.result()).toEqual({ label: 'after the kill', ev: 1 });
      await standby.close();
    });
  });

  it('takes over, before its lease expires, from an engine on this machine whose process was killed', async () => {
    const count = 200;
    // A lease of 15 s, claimed every 5 s: the standby's next claim sees the holder's process gone.
    await withChildEngine(count, 15_000, async (child) => {
      const standby = await startEngine(db(), { workflows: { mixed, waitsForGo }, activities: fixtureActivities, leaseTtlMs: 15_000 });
      expect(await readMetric(standby, HELD)).toBe(0);
      expect((await killAndAwaitTakeover(child, standby)).isBeforeAnyExpiry).toBe(true);
      expect((await standby.leases()).map((l) => l.epoch)).toEqual([2, 2]);
      await expectFinished(standby, count);
      await standby.close();
    });
  });

  it('runs at once the workflows of the engine it replaces after a kill, whatever lease that engine had left', async () => {
    const count = 100;
    await withChildEngine(count, 60_000, async (child) => {
      await child.line(/^quarter done/);
      child.process.kill('SIGKILL');
      await child.exited;
    });
    // As a service restarted after a crash: its first claim finds its predecessor gone.
    const restarted = await startEngine(db(), { workflows: { mixed, waitsForGo }, activities: fixtureActivities, leaseTtlMs: 60_000 });
    expect(await readMetric(restarted, HELD)).toBe(2);
    await expectFinished(restarted, count);
    await restarted.close();
  });

  it('leaves to an engine of the previous release, which writes no process, the names it took from one of this release that ended', async () => {
    const child = spawnFixture('engine-process.js', { DATABASE_URL: process.env.DATABASE_URL!, DURAFLOW_SCHEMA: db().schema, LEASE_TTL_MS: '60000' });
    try {
      await child.line(/^ready/);
      child.process.kill('SIGKILL');
      await child.exited;
      // Its leases expire, and an engine of the previous release (a rolling deploy) claims them with
      // that release's statement, which knows no process column: the rows still name the child's.
      await db().query(`UPDATE "${db().schema}".leases SET expires_at = now() - interval '1 second'`);
      await db().query(
        `INSERT INTO "${db().schema}".leases AS l (name, owner, epoch, expires_at)
         SELECT n, 'previous-release:1:0000abcd', 1, now() + interval '1 hour' FROM unnest($1::text[]) AS n
         ON CONFLICT (name) DO UPDATE SET
           owner = excluded.owner,
           epoch = CASE WHEN l.owner = excluded.owner THEN l.epoch ELSE l.epoch + 1 END,
           expires_at = excluded.expires_at
         WHERE l.owner = excluded.owner OR l.expires_at <= now()`,
        [['mixed', 'waitsForGo']],
      );
      // That engine is alive: its names are not this one's before its lease expires.
      const engine = await startEngine(db(), { workflows: { mixed, waitsForGo }, activities: fixtureActivities, leaseTtlMs: 60_000 });
      expect(await readMetric(engine, HELD)).toBe(0);
      expect((await engine.leases()).map((l) => l.owner)).toEqual(['previous-release:1:0000abcd', 'previous-release:1:0000abcd']);
      await engine.close();
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

  it('commits the steps of other names in a flush refused for one lost name, and stores the start of the lost one for its holder', async () => {
    const a = await startEngine(db(), { workflows: { tagged, other }, inlineActivities: { whoAmI: async () => 'a' }, leaseTtlMs: 60_000 });
    try {
      // Another engine took 'tagged' while this one stalled; it has not renewed since.
      await db().query(`UPDATE "${db().schema}".leases SET owner = 'elsewhere', epoch = epoch + 1, expires_at = now() + interval '1 hour'
        WHERE name = 'tagged'`);
      // Both first steps go in one flush, refused for 'tagged' only.
      const [lost, kept] = await Promise.all([
        a.startWorkflow(tagged, { wait: false }, { workflowId: 's-lost' }),
        a.startWorkflow(other, 1, { workflowId: 's-kept' }),
      ]);
      expect(await kept.result({ timeoutMs: 10_000 })).toBe(2);
      expect(lost.workflowId).toBe('s-lost');
      expect((await a.inspect('s-lost')).status).toBe('pending');
    } finally {
      await a.close();
    }
  });

  it('rebuilds none of the workflows of other names whose steps shared a flush refused for one lost name', async () => {
    // No poll in the test's time: between the refusal and the claim that tells the engine the name
    // is gone, one would hand t-lost's event, still in the inbox, to a new actor, rebuilt from the
    // database (a rebuild the fence makes harmless, but one this test would count).
    const a = await startEngine(db(), {
      workflows: { tagged, taggedToo },
      inlineActivities: { whoAmI: async () => 'a' },
      leaseTtlMs: 60_000,
      pollIntervalMs: 600_000,
    });
    let lock: { release(): Promise<void> } = { release: async () => undefined };
    try {
      const handles = await Promise.all(
        ['t-lost', 'b-1', 'b-2', 't-kept'].map((id) => a.startWorkflow(id === 't-lost' ? tagged : taggedToo, { wait: true }, { workflowId: id })),
      );
      for (const { workflowId } of handles) await waitFor(async () => (await a.inspect(workflowId)).waitingOn.events.length > 0, `${workflowId}'s wait`);
      // Both flushes in flight wait on a lock, so the next two steps are batched together.
      lock = await lockTable(db(), 'wal_commits');
      await a.sendEvent('b-1', 'go');
      await waitFor(async () => (await flushesWaitingForLock(db())) === 1, 'the first flush to wait');
      await a.sendEvent('b-2', 'go');
      await waitFor(async () => (await flushesWaitingForLock(db())) === 2, 'the second flush to wait');
      // The four take the same step: the two flushes in flight hold half of what all four write.
      const inFlight = await readMetric(a, 'duraflow_wal_pending_events');
      await db().query(`UPDATE "${db().schema}".leases SET owner = 'elsewhere', epoch = epoch + 1, expires_at = now() + interval '1 hour'
        WHERE name = 'tagged'`);
      await a.sendEvent('t-lost', 'go');
      await a.sendEvent('t-kept', 'go');
      // An event reaches its actor after sendEvent returns: both steps must wait in the WAL before
      // the lock goes, or the first flush to end could take one without the other.
      await waitFor(async () => (await readMetric(a, 'duraflow_wal_pending_events')) === 2 * inFlight, 'both steps to wait for a flush');
      const rebuilt = await readMetric(a, 'duraflow_actor_rehydrations_total');
      await lock.release();
      expect(await a.result('t-kept', { timeoutMs: 10_000 })).toBe('a');
      await waitFor(async () => (await readMetric(a, HELD)) === 1, 'a to give up the lost name');
      expect(await readMetric(a, 'duraflow_wal_flush_errors_total')).toBeGreaterThan(0);
      // Its step committed in the retried batch: its actor was not dropped and rebuilt.
      expect(await readMetric(a, 'duraflow_actor_rehydrations_total')).toBe(rebuilt);
    } finally {
      await lock.release();
      await a.close();
    }
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
