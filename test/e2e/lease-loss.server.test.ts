/**
 * Losing a workflow name while work for it is in flight: another engine takes the name (or the
 * lease expires while this one is cut off) while an activity runs, a recovery reads, a retry
 * waits or a flush is refused, and each of them must run once, on the holder.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import pg from 'pg';

import { describe, expect, it } from 'vitest';

import { type ActivityContext, createEngine, type Engine, type WorkflowContext } from 'duraflow';

import { waitsForGo } from '../fixtures/workflows.js';
import {
  flushesWaitingForLock,
  isWaitingForLock,
  lockTable,
  serverBackends,
  type TestSchema,
  useSchema,
} from '../helpers/database.js';
import { fixtureActivities, openClient, quietLogger, readMetric, startEngine } from '../helpers/engines.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { heldActivity } from '../helpers/held-activity.js';
import { waitFor } from '../helpers/wait-for.js';

const HELD = 'duraflow_leases_held';
const HELD_BACK = 'duraflow_effects_held_back';

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

/** An engine of `engineBehind`, and how to let its first attempt fail. */
interface EngineBehind {
  engine: Engine;
  attempts: number[];
  /** Lets the first attempt, which waits for this, fail. */
  failFirst(): void;
}

/**
 * An engine on `proxy` whose lease lasts 1 s, and whose flaky activity records every attempt,
 * answers `name`, and fails its first attempt once `failFirst()` is called.
 */
async function engineBehind(proxy: FaultProxy, db: TestSchema, name: string): Promise<EngineBehind> {
  let failFirst!: () => void;
  const gate = new Promise<void>((resolve) => (failFirst = resolve));
  const attempts: number[] = [];
  const engine = await createEngine({
    database: proxy.url(process.env.DATABASE_URL!),
    schema: db.schema,
    workflows: { retried },
    inlineActivities: {
      flaky: async (_input: unknown, ctx: ActivityContext) => {
        attempts.push(ctx.attempt);
        if (ctx.attempt > 1) return name;
        await gate;
        throw new Error('first attempt fails');
      },
    },
    leaseTtlMs: 1_000,
    pollIntervalMs: 500,
    logger: quietLogger,
  });
  return { engine, attempts, failFirst };
}

/**
 * Starts `workflowId` on `a`, and once its first attempt runs holds up a's renewals (its flushes
 * still commit), so that its lease is overdue 1 s after its last renewal at the latest: before
 * the retry it then commits (due 3 s later) is, however long this process takes to cut it off.
 * Then lets the attempt fail, waits for the retry row and cuts `a` off the database. Resolves with
 * the hold on the renewals (release it to let claims through again).
 */
async function cutOffWithRetryStored(
  db: TestSchema,
  proxy: FaultProxy,
  a: EngineBehind,
  workflowId: string,
): Promise<{ release(): Promise<void> }> {
  await a.engine.startWorkflow(retried, undefined, { workflowId });
  await waitFor(() => a.attempts.length === 1, 'the first attempt to run');
  const claims = await blockClaims(db);
  try {
    a.failFirst();
    await waitFor(async () => (await db.query(`SELECT 1 FROM "${db.schema}".activity_tasks`)).length === 1, 'the retry row');
    await proxy.refuse();
    proxy.cutAll();
    return claims;
  } catch (error) {
    await claims.release();
    throw error;
  }
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
    // Recoveries that ended with none left under way.
    let recoveriesDone = 0;
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
      logger: {
        ...quietLogger,
        debug(obj: object, msg?: string) {
          if (msg === 'a recovery ended' && (obj as { recoveries: number }).recoveries === 0) recoveriesDone++;
        },
      },
    });
    try {
      const handle = await a.startWorkflow(once, undefined, { workflowId: 'g-1' });
      await waitFor(() => calls === 1, 'the activity to start');
      await takeNamesElsewhere(db());
      await waitFor(async () => (await readMetric(a, HELD)) === 0, 'a to give the name up');
      // The other engine's lease ends before it ran anything: a takes the name back and recovers
      // the workflow, whose activity is still in flight here.
      const doneBefore = recoveriesDone;
      await endLeasesElsewhere(db());
      await db().query(`SELECT pg_notify($1, 'lease')`, [`duraflow_${db().schema}`]);
      await waitFor(async () => (await readMetric(a, HELD)) === 1, 'a to take the name back');
      // Released before the recovery of the name taken back had read the task, the attempt the
      // abandoned one's end starts could end before this recovery dispatched the task, which
      // then ran a third time (a recovery that read the history first may: see the README).
      await waitFor(() => recoveriesDone > doneBefore, 'the recovery of the name taken back to end');
      expect(calls, 'attempts started while the abandoned one ran').toBe(1);
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
    const attemptsOnB: number[] = [];
    let a: EngineBehind | undefined;
    let b: Engine | undefined;
    let claims: { release(): Promise<void> } | undefined;
    try {
      a = await engineBehind(proxy, db(), 'a');
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
      claims = await cutOffWithRetryStored(db(), proxy, a, 'o-1');
      // The retry comes due on a with its lease overdue: held back.
      await waitFor(async () => (await readMetric(a!.engine, HELD_BACK)) === 1, "a's retry to be held back", 10_000);
      // Its lease has expired in the database: once claims get through again, b takes the name.
      await claims.release();
      await waitFor(async () => (await readMetric(b!, HELD)) === 1, 'b to take the name', 10_000);
      expect(await b.result('o-1', { timeoutMs: 15_000 })).toBe('b');
      expect(attemptsOnB).toEqual([2]);
      expect(a.attempts, 'attempts run on a').toEqual([1]);
    } finally {
      a?.failFirst();
      await claims?.release();
      await b?.close();
      await proxy.accept();
      await a?.engine.close().catch(() => undefined);
      await proxy.close();
    }
  });

  it('runs what it held back while cut off past its lease, once a renewal finds the name still its own', async () => {
    const proxy = await FaultProxy.start();
    let a: EngineBehind | undefined;
    let claims: { release(): Promise<void> } | undefined;
    try {
      a = await engineBehind(proxy, db(), 'a');
      claims = await cutOffWithRetryStored(db(), proxy, a, 'k-1');
      await claims.release();
      // The retry comes due while the lease is overdue: it is held back, not run.
      await waitFor(async () => (await readMetric(a!.engine, HELD_BACK)) === 1, 'the retry to be held back', 10_000);
      expect(a.attempts).toEqual([1]);
      await proxy.accept();
      // No other engine took the name: the next renewal keeps it and releases the held retry.
      expect(await a.engine.result('k-1', { timeoutMs: 20_000 })).toBe('a');
      expect(a.attempts).toEqual([1, 2]);
    } finally {
      a?.failFirst();
      await claims?.release();
      await proxy.accept();
      await a?.engine.close().catch(() => undefined);
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
