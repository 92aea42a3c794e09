import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';

import { describe, expect, it } from 'vitest';

import { type ActivityContext, createEngine, type Engine, type WorkflowContext, type WorkflowHandle } from 'duraflow';

import { expectedMixed, mixed, waitsForGo } from '../fixtures/workflows.js';
import { type Child, spawnFixture } from '../helpers/child-engine.js';
import { runCli } from '../helpers/cli.js';
import { backends, isWaitingForLock, lockTable, serverBackends, type TestSchema, useSchema } from '../helpers/database.js';
import { fixtureActivities, openClient, quietLogger, readMetric, startEngine, trackedEngines } from '../helpers/engines.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { heldActivity } from '../helpers/held-activity.js';
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
const HELD_BACK = 'duraflow_effects_held_back';

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
    const a = await startEngine(db(), { workflows: { tagged, taggedToo }, inlineActivities: { whoAmI: async () => 'a' }, leaseTtlMs: 60_000 });
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
      await db().query(`UPDATE "${db().schema}".leases SET owner = 'elsewhere', epoch = epoch + 1, expires_at = now() + interval '1 hour'
        WHERE name = 'tagged'`);
      await a.sendEvent('t-lost', 'go');
      await a.sendEvent('t-kept', 'go');
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


/** As if another engine took every name of the schema while this one stalled; then a claim learns it. */
async function takeNamesElsewhere(db: TestSchema): Promise<void> {
  await db.query(`UPDATE "${db.schema}".leases SET owner = 'elsewhere', epoch = epoch + 1, expires_at = now() + interval '1 hour'`);
  await db.query(`SELECT pg_notify($1, 'lease')`, [`duraflow_${db.schema}`]);
}

async function endLeasesElsewhere(db: TestSchema): Promise<void> {
  await db.query(`UPDATE "${db.schema}".leases SET expires_at = now() - interval '1 second'`);
}

async function waitsThenAsks(ctx: WorkflowContext): Promise<string> {
  const { whoAmI } = ctx.activities<{ whoAmI(): Promise<string> }>();
  await ctx.waitForEvent('go');
  return whoAmI();
}

async function busy(ctx: WorkflowContext): Promise<string> {
  const { work } = ctx.activities<{ work(): Promise<string> }>();
  const [result] = await Promise.all([work(), ctx.sleep(3_600_000)]);
  return result;
}

async function sleeper(ctx: WorkflowContext): Promise<void> {
  await ctx.waitForEvent('go');
  await ctx.sleep(3_600_000);
}

async function waiter(ctx: WorkflowContext): Promise<void> {
  await ctx.waitForEvent('never');
}

async function once(ctx: WorkflowContext): Promise<string> {
  const { work } = ctx.activities<{ work(): Promise<string> }>();
  return work();
}

async function napper(ctx: WorkflowContext): Promise<string> {
  await ctx.sleep(3_000);
  return 'slept';
}

/**
 * Flush statements of the schema that write history waiting for a lock (recognised by their start:
 * Postgres shows a statement's first kilobyte).
 */
async function flushesWaitingForLock(db: TestSchema): Promise<number> {
  const rows = await db.query(
    `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'WITH ins_h AS%' AND query LIKE '%' || $1 || '%'`,
    [db.schema],
  );
  return rows.length;
}

/** An activity in flight beside a wait for an event. */
async function pokedRetry(ctx: WorkflowContext): Promise<string> {
  const { flaky } = ctx.activities<{ flaky(): Promise<string> }>({ retry: { initialIntervalMs: 4_000, backoffCoefficient: 1 } });
  const [result] = await Promise.all([flaky(), ctx.waitForEvent('poke')]);
  return result;
}

/** Runs the fixture activity that waits for its signal to abort. */
async function awaitsAbort(ctx: WorkflowContext, input: { file: string; ms: number }): Promise<string> {
  const { awaitAbort } = ctx.activities<{ awaitAbort(input: { file: string; ms: number }): Promise<string> }>();
  return awaitAbort(input);
}

async function quick(_ctx: WorkflowContext): Promise<string> {
  return 'quick';
}

/** Leaves an activity failing in retry backoff and ends when told to, without awaiting it. */
async function abandons(ctx: WorkflowContext): Promise<string> {
  const { flaky } = ctx.activities<{ flaky(): Promise<string> }>({ retry: { initialIntervalMs: 6_000, backoffCoefficient: 1 } });
  void flaky().catch(() => undefined);
  await ctx.waitForEvent('go');
  return 'went';
}

/**
 * Holds the lease rows FOR SHARE until `release()`: renewals (updates) wait, so the engine's lease
 * goes overdue by its own clock, while its flushes (which lock the rows FOR SHARE too) commit.
 */
async function blockClaims(db: TestSchema): Promise<{ release(): Promise<void> }> {
  const holder = new pg.Client({ connectionString: db.database as string });
  await holder.connect();
  await holder.query('BEGIN');
  await holder.query(`SELECT 1 FROM "${db.schema}".leases FOR SHARE`);
  let isReleased = false;
  return {
    async release() {
      if (isReleased) return;
      isReleased = true;
      await holder.query('COMMIT').catch(() => undefined);
      await holder.end().catch(() => undefined);
    },
  };
}

async function retried(ctx: WorkflowContext): Promise<string> {
  const { flaky } = ctx.activities<{ flaky(): Promise<string> }>({ retry: { initialIntervalMs: 3_000, backoffCoefficient: 1 } });
  return flaky();
}

/**
 * An engine on `proxy`, whose flaky activity records every attempt and fails its first one once
 * `failFirst` resolves.
 */
function engineBehind(
  proxy: FaultProxy,
  db: TestSchema,
  name: string,
  attempts: number[],
  leaseTtlMs: number,
  failFirst: Promise<void>,
): Promise<Engine> {
  return createEngine({
    database: proxy.url(process.env.DATABASE_URL!),
    schema: db.schema,
    workflows: { retried },
    inlineActivities: {
      flaky: async (_input: unknown, ctx: ActivityContext) => {
        attempts.push(ctx.attempt);
        if (ctx.attempt > 1) return name;
        await failFirst;
        throw new Error('first attempt fails');
      },
    },
    leaseTtlMs,
    pollIntervalMs: 500,
    logger: quietLogger,
  });
}

// Races between losing a name and the work in flight for it (several engines need a server).
describe.each(serverBackends)('losing a workflow name while work for it is in flight on $name', (backend) => {
  const db = useSchema(backend);

  it('answers a result() awaited on the engine that lost the name, once the new holder finishes the workflow', async () => {
    const a = await startEngine(db(), { workflows: { waitsThenAsks }, inlineActivities: { whoAmI: async () => 'a' }, leaseTtlMs: 60_000 });
    const b = await startEngine(db(), { workflows: { waitsThenAsks }, inlineActivities: { whoAmI: async () => 'b' }, leaseTtlMs: 600 });
    try {
      await a.startWorkflow(waitsThenAsks, undefined, { workflowId: 'r-1' });
      await waitFor(async () => (await a.inspect('r-1')).waitingOn.events.length > 0, 'the wait on a');
      // Awaited on a while a runs it in memory: a would settle it itself.
      const awaited = a.result<string>('r-1', { timeoutMs: 15_000 });
      await takeNamesElsewhere(db());
      await waitFor(async () => (await readMetric(a, HELD)) === 0, 'a to give the name up');
      await endLeasesElsewhere(db());
      await waitFor(async () => (await readMetric(b, HELD)) === 1, 'b to take the name');
      await b.sendEvent('r-1', 'go');
      // b's own result() would settle a's waiters too (same process): read the database instead.
      await waitFor(async () => (await b.inspect('r-1')).status === 'completed', 'b to finish the workflow');
      expect(await awaited).toBe('b');
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('neither dispatches activities nor arms timers of a name lost while its recovery read the database', async () => {
    const onB = heldActivity();
    const b = await startEngine(db(), { workflows: { busy }, inlineActivities: { work: onB.activity }, leaseTtlMs: 60_000 });
    let callsOnA = 0;
    const a = await startEngine(db(), { workflows: { busy }, inlineActivities: { work: async () => `a${++callsOnA}` }, leaseTtlMs: 60_000 });
    let lock: { release(): Promise<void> } = { release: async () => undefined };
    try {
      await b.startWorkflow(busy, undefined, { workflowId: 'x-1' });
      await waitFor(async () => (await b.inspect('x-1')).waitingOn.activities.length > 0, 'the activity to run on b');
      // a's recovery of the name will wait on this lock (it reads activity_tasks).
      lock = await lockTable(db(), 'activity_tasks');
      await b.close(); // releases the name and notifies: a takes it and starts recovering it
      await waitFor(async () => (await readMetric(a, HELD)) === 1, 'a to take the name');
      await waitFor(() => isWaitingForLock(db(), 'ActivityScheduled'), "a's recovery to wait for the lock");
      await takeNamesElsewhere(db());
      await waitFor(async () => (await readMetric(a, HELD)) === 0, 'a to give the name up');
      await lock.release();
      await waitFor(async () => !(await isWaitingForLock(db(), 'ActivityScheduled')), 'the recovery to go on');
      // The recovery's rows are handled in the turn its last query answers; a's flushes and polls
      // come after: once a poll has run, any dispatch or timer would have happened.
      const flushes = await readMetric(a, 'duraflow_wal_flushes_total');
      await a.startWorkflow(busy, undefined, { workflowId: 'x-2' }); // stored for the holder: a commit after
      await waitFor(async () => (await readMetric(a, 'duraflow_wal_flushes_total')) > flushes, 'a later flush');
      expect(callsOnA, 'activities of a lost name run on a').toBe(0);
      expect(await readMetric(a, 'duraflow_timers_armed'), 'timers of a lost name armed on a').toBe(0);
    } finally {
      await lock.release();
      await a.close();
      onB.release();
    }
  });

  it('stores a start for the holder when the name is lost while its first step waits for room in the WAL', async () => {
    // A WAL congested by a single step: a start's first step then waits for room before running.
    const a = await startEngine(db(), { workflows: { sleeper, waiter }, leaseTtlMs: 60_000, walHighWaterEvents: 1 });
    let lock: { release(): Promise<void> } = { release: async () => undefined };
    try {
      await a.startWorkflow(sleeper, undefined, { workflowId: 's-0' });
      await waitFor(async () => (await a.inspect('s-0')).waitingOn.events.length > 0, 'the wait');
      // The step after the event inserts a timer: its flush waits on this lock and the WAL stays congested.
      lock = await lockTable(db(), 'timers');
      await a.sendEvent('s-0', 'go');
      await waitFor(() => isWaitingForLock(db(), 'ins_t'), 'the flush to wait for the lock');
      const started = a.startWorkflow(waiter, undefined, { workflowId: 's-1' });
      await takeNamesElsewhere(db());
      await waitFor(async () => (await readMetric(a, HELD)) === 0, 'a to give the names up');
      await lock.release(); // the blocked flush fails (LeaseLostError) and the WAL empties
      expect((await started).workflowId).toBe('s-1');
      expect(await db().query(`SELECT status FROM "${db().schema}".workflows WHERE id = 's-1'`)).toEqual([{ status: 'pending' }]);
    } finally {
      await lock.release();
      await a.close();
    }
  });

  it('aborts the signal of an activity of a name another engine took over, and records nothing of its end', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'duraflow-taken-'));
    const file = path.join(dir, 'attempt');
    const linesOf = async (): Promise<string[]> => (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean);
    const a = await startEngine(db(), { workflows: { awaitsAbort }, activities: fixtureActivities, leaseTtlMs: 60_000 });
    try {
      await a.startWorkflow(awaitsAbort, { file, ms: 60_000 }, { workflowId: 't-1' });
      await waitFor(async () => (await linesOf()).length === 1, 'the activity to start in its thread');
      const rows = await db().query(`SELECT type FROM "${db().schema}".history WHERE workflow_id = 't-1' ORDER BY seq`);
      await takeNamesElsewhere(db());
      await waitFor(async () => (await linesOf()).length === 2, "the activity's signal to abort", 10_000);
      expect(await linesOf()).toEqual(['started', 'NameTakenOverError DURAFLOW_NAME_TAKEN_OVER']);
      expect(await readMetric(a, HELD)).toBe(0);
      await waitFor(async () => (await readMetric(a, 'duraflow_activity_tasks_running')) === 0, 'the attempt to end');
      // Its end is the new holder's to record: a wrote neither an outcome nor a retry.
      const flushes = await readMetric(a, 'duraflow_wal_flushes_total');
      await a.startWorkflow(awaitsAbort, { file, ms: 0 }, { workflowId: 't-2' }); // stored for the holder: a commit after
      await waitFor(async () => (await readMetric(a, 'duraflow_wal_flushes_total')) > flushes, 'a later flush');
      expect(await db().query(`SELECT type FROM "${db().schema}".history WHERE workflow_id = 't-1' ORDER BY seq`)).toEqual(rows);
      expect(await db().query(`SELECT 1 FROM "${db().schema}".activity_tasks`)).toEqual([]);
    } finally {
      await a.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('runs an activity again once it takes a name back while the attempt it abandoned, which ignored its signal, was still running', async () => {
    let calls = 0;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const a = await startEngine(db(), {
      workflows: { once },
      // Ignores its signal: it ends when released, whatever happened meanwhile.
      inlineActivities: {
        work: async () => {
          const call = ++calls;
          await released;
          return `call ${call}`;
        },
      },
      leaseTtlMs: 60_000,
    });
    try {
      const handle = await a.startWorkflow(once, undefined, { workflowId: 'g-1' });
      await waitFor(() => calls === 1, 'the activity to start');
      await takeNamesElsewhere(db());
      await waitFor(async () => (await readMetric(a, HELD)) === 0, 'a to give the name up');
      // The other engine's lease ends before it ran anything: a takes the name back and recovers
      // the workflow, whose activity is still in flight here.
      await endLeasesElsewhere(db());
      await db().query(`SELECT pg_notify($1, 'lease')`, [`duraflow_${db().schema}`]);
      await waitFor(async () => (await readMetric(a, HELD)) === 1, 'a to take the name back');
      release();
      expect(await handle.result({ timeoutMs: 15_000 })).toBe('call 2');
      expect(calls).toBe(2);
    } finally {
      release();
      await a.close();
    }
  });

  it('runs no activity attempt once its lease may have expired while it was cut off, and another engine holds the name', async () => {
    const proxy = await FaultProxy.start();
    const attemptsOnA: number[] = [];
    const attemptsOnB: number[] = [];
    let failFirst!: () => void;
    const gate = new Promise<void>((resolve) => (failFirst = resolve));
    let a: Engine | undefined;
    let b: Engine | undefined;
    let claims: { release(): Promise<void> } | undefined;
    try {
      a = await engineBehind(proxy, db(), 'a', attemptsOnA, 1_000, gate);
      b = await startEngine(db(), {
        workflows: { retried },
        inlineActivities: {
          flaky: async (_input: unknown, ctx: ActivityContext) => {
            attemptsOnB.push(ctx.attempt);
            return 'b';
          },
        },
        leaseTtlMs: 600,
      });
      await a.startWorkflow(retried, undefined, { workflowId: 'o-1' });
      await waitFor(() => attemptsOnA.length === 1, 'the first attempt to run');
      // No renewal of a gets through from now on (flushes still do), so its lease is overdue 1 s
      // after its last one at the latest, before the retry it commits next (3 s later) is due,
      // however long this process takes to cut it off.
      claims = await blockClaims(db());
      failFirst();
      await waitFor(async () => (await db().query(`SELECT 1 FROM "${db().schema}".activity_tasks`)).length === 1, 'the retry row');
      // a loses the database; the retry comes due on a with its lease overdue: held back.
      await proxy.refuse();
      proxy.cutAll();
      await waitFor(async () => (await readMetric(a!, HELD_BACK)) === 1, "a's retry to be held back", 10_000);
      // Its lease has expired in the database: once claims get through again, b takes the name.
      await claims.release();
      await waitFor(async () => (await readMetric(b!, HELD)) === 1, 'b to take the name', 10_000);
      expect(await b.result('o-1', { timeoutMs: 15_000 })).toBe('b');
      expect(attemptsOnB).toEqual([2]);
      expect(attemptsOnA, 'attempts run on a').toEqual([1]);
    } finally {
      failFirst();
      await claims?.release();
      await b?.close();
      await proxy.accept();
      await a?.close().catch(() => undefined);
      await proxy.close();
    }
  });

  it('runs what it held back while cut off past its lease, once a renewal finds the name still its own', async () => {
    const proxy = await FaultProxy.start();
    const attempts: number[] = [];
    let failFirst!: () => void;
    const gate = new Promise<void>((resolve) => (failFirst = resolve));
    let a: Engine | undefined;
    let claims: { release(): Promise<void> } | undefined;
    try {
      a = await engineBehind(proxy, db(), 'a', attempts, 1_000, gate);
      await a.startWorkflow(retried, undefined, { workflowId: 'k-1' });
      await waitFor(() => attempts.length === 1, 'the first attempt to run');
      // No renewal gets through from now on (flushes still do): the lease is overdue before the
      // retry committed next is due, however long this process takes to cut the engine off.
      claims = await blockClaims(db());
      failFirst();
      await waitFor(async () => (await db().query(`SELECT 1 FROM "${db().schema}".activity_tasks`)).length === 1, 'the retry row');
      await proxy.refuse();
      proxy.cutAll();
      await claims.release();
      // The retry comes due while the lease is overdue: it is held back, not run.
      await waitFor(async () => (await readMetric(a!, HELD_BACK)) === 1, 'the retry to be held back', 10_000);
      expect(attempts).toEqual([1]);
      await proxy.accept();
      // No other engine took the name: the next renewal keeps it and releases the held retry.
      expect(await a.result('k-1', { timeoutMs: 20_000 })).toBe('a');
      expect(attempts).toEqual([1, 2]);
    } finally {
      failFirst();
      await claims?.release();
      await proxy.accept();
      await a?.close().catch(() => undefined);
      await proxy.close();
    }
  });

  it('releases once, not again, an activity whose end waits in the WAL when a renewal after an outage finds the name kept', async () => {
    const proxy = await FaultProxy.start();
    let calls = 0;
    let finishFirst!: () => void;
    const first = new Promise<void>((resolve) => (finishFirst = resolve));
    let engine: Engine | undefined;
    let lock: { release(): Promise<void> } = { release: async () => undefined };
    try {
      engine = await createEngine({
        database: proxy.url(process.env.DATABASE_URL!),
        schema: db().schema,
        workflows: { once, napper },
        inlineActivities: {
          work: async () => {
            calls++;
            if (calls === 1) await first;
            return 'done';
          },
        },
        leaseTtlMs: 1_000,
        pollIntervalMs: 500,
        logger: quietLogger,
      });
      const a = engine;
      const done = await a.startWorkflow(once, undefined, { workflowId: 'once-1' });
      await waitFor(() => calls === 1, 'the activity to run');
      const napping = await a.startWorkflow(napper, undefined, { workflowId: 'nap-1' });
      await waitFor(async () => (await readMetric(a, 'duraflow_timers_armed')) === 1, 'the sleep timer');
      // The database goes away (the only engine: nobody takes its names), and the sleep comes due
      // with the lease overdue by the engine's clock: held back.
      await proxy.refuse();
      proxy.cutAll();
      await waitFor(async () => (await readMetric(a, 'duraflow_timers_armed')) === 0, 'the timer to fire (held back)');
      // The activity ends during the outage: its end waits in the WAL. Once the database is back,
      // history writes wait on this lock while reads go on.
      lock = await lockTable(db(), 'history', 'EXCLUSIVE');
      const errors = await readMetric(a, 'duraflow_wal_flush_errors_total');
      finishFirst();
      await waitFor(async () => (await readMetric(a, 'duraflow_wal_flush_errors_total')) > errors, 'the flush of its end to fail');
      await proxy.accept();
      // Two flushes wait on the lock: the activity's end, and the step of the timer released
      // after the renewal (it was due): by then the renewal has released all it held back.
      await waitFor(async () => (await flushesWaitingForLock(db())) === 2, "the sleeper's step after the renewal");
      await lock.release();
      expect(await done.result({ timeoutMs: 20_000 })).toBe('done');
      expect(await napping.result({ timeoutMs: 20_000 })).toBe('slept');
      expect(calls, 'runs of an activity that completed once, with no failure').toBe(1);
    } finally {
      await lock.release();
      await proxy.accept();
      finishFirst?.();
      await engine?.close().catch(() => undefined);
      await proxy.close();
    }
  });
  it('holds back a due start once, not once per poll that finds it, while its lease is overdue', async () => {
    const a = await startEngine(db(), {
      workflows: { quick, waitsForGo, napper },
      leaseTtlMs: 1_000,
      pollIntervalMs: 100,
    });
    const client = await openClient(db());
    const claims = await blockClaims(db());
    try {
      await a.startWorkflow(waitsForGo, { label: 'probe' }, { workflowId: 'probe' });
      const napping = await a.startWorkflow(napper, undefined, { workflowId: 'nap-1' });
      // The nap's timer fires with the lease overdue (renewals wait on the lock): held back.
      await waitFor(async () => (await readMetric(a, HELD_BACK)) === 1, 'the nap to be held back', 10_000);
      // So is the start a client makes now, found due by the engine's polls.
      await client.startWorkflow('quick', undefined, { workflowId: 'q-1' });
      await waitFor(async () => (await readMetric(a, HELD_BACK)) === 2, 'the start to be held back');
      // An event ends this workflow by a later poll (no side effect to hold), which finds the held
      // start due again.
      await client.sendEvent('probe', 'go');
      await waitFor(async () => (await a.inspect('probe')).status === 'completed', 'a poll after the hold');
      expect(await readMetric(a, HELD_BACK)).toBe(2);
      await claims.release();
      expect(await client.result('q-1', { timeoutMs: 10_000 })).toBe('quick');
      expect(await napping.result({ timeoutMs: 10_000 })).toBe('slept');
      expect(await readMetric(a, HELD_BACK)).toBe(0);
    } finally {
      await claims.release();
      await client.close();
      await a.close();
    }
  });

  it('does not run a retry that a step committed while the lease was overdue cancelled', async () => {
    const attempts: number[] = [];
    const a = await startEngine(db(), {
      workflows: { abandons, napper },
      inlineActivities: {
        flaky: async (_input: unknown, ctx: ActivityContext) => {
          attempts.push(ctx.attempt);
          throw new Error('fails');
        },
      },
      leaseTtlMs: 1_000,
    });
    const claims = await blockClaims(db());
    try {
      await a.startWorkflow(abandons, undefined, { workflowId: 'ab-1' });
      await waitFor(async () => (await db().query(`SELECT 1 FROM "${db().schema}".activity_tasks`)).length === 1, 'the retry row');
      const napping = await a.startWorkflow(napper, undefined, { workflowId: 'nap-1' });
      // The nap's timer fires with the lease overdue (renewals wait on the lock): held back.
      await waitFor(async () => (await readMetric(a, HELD_BACK)) === 1, 'the nap to be held back', 10_000);
      // This step commits (flushes still get through) and ends the workflow: its retry is cancelled
      // at once, not held back with the other effects (its timer would fire meanwhile and run it).
      await a.sendEvent('ab-1', 'go');
      expect(await a.result('ab-1', { timeoutMs: 10_000 })).toBe('went');
      expect(await readMetric(a, 'duraflow_timers_armed')).toBe(0);
      await claims.release();
      expect(await napping.result({ timeoutMs: 10_000 })).toBe('slept');
      expect(await readMetric(a, HELD_BACK)).toBe(0);
      expect(attempts, 'attempts of an activity whose retry was cancelled').toEqual([1]);
    } finally {
      await claims.release();
      await a.close();
    }
  });
  it('runs an activity once more, not twice, when its attempt ends while a recovery of its workflow is held back', async () => {
    const attempts: number[] = [];
    let failFirst!: () => void;
    const gate = new Promise<void>((resolve) => (failFirst = resolve));
    const schema = `"${db().schema}"`;
    const a = await startEngine(db(), {
      workflows: { pokedRetry, napper },
      inlineActivities: {
        flaky: async (_input: unknown, ctx: ActivityContext) => {
          attempts.push(ctx.attempt);
          if (ctx.attempt > 1) return 'ok';
          await gate;
          throw new Error('fails');
        },
      },
      leaseTtlMs: 1_000,
    });
    // The first flush of an EventReceived row fails (a sequence is not rolled back with it): the
    // engine drops the workflow's actor and recovers it from the database.
    await db().query(`CREATE SEQUENCE ${schema}.fail_once`);
    await db().query(`CREATE FUNCTION ${schema}.fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.type = 'EventReceived' AND nextval('${schema}.fail_once') = 1 THEN RAISE EXCEPTION 'this flush fails once'; END IF;
        RETURN NEW;
      END $$`);
    await db().query(`CREATE TRIGGER fail_once BEFORE INSERT ON ${schema}.history FOR EACH ROW EXECUTE FUNCTION ${schema}.fail_once()`);
    const claims = await blockClaims(db());
    try {
      await a.startWorkflow(pokedRetry, undefined, { workflowId: 'pr-1' });
      await waitFor(() => attempts.length === 1, 'the first attempt to run');
      const napping = await a.startWorkflow(napper, undefined, { workflowId: 'nap-1' });
      await waitFor(async () => (await readMetric(a, HELD_BACK)) === 1, 'the nap to be held back', 10_000);
      // The event's step fails to flush: the workflow is rebuilt, and its recovery finds attempt 1 running.
      await a.sendEvent('pr-1', 'poke');
      await waitFor(async () => (await readMetric(a, 'duraflow_actor_rehydrations_total')) >= 1, 'the workflow to be rebuilt');
      // Attempt 1 fails: the rebuilt workflow commits attempt 2, whose timer is held back.
      failFirst();
      await waitFor(async () => (await db().query(`SELECT 1 FROM ${schema}.activity_tasks WHERE attempt = 2`)).length === 1, 'the retry row');
      await waitFor(async () => (await readMetric(a, HELD_BACK)) === 2, 'the retry to be held back');
      await claims.release();
      expect(await a.result('pr-1', { timeoutMs: 15_000 })).toBe('ok');
      expect(await napping.result({ timeoutMs: 10_000 })).toBe('slept');
      expect(attempts).toEqual([1, 2]);
    } finally {
      await claims.release();
      await a.close();
    }
  });
});
