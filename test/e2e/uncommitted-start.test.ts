import { describe, expect, it } from 'vitest';

import { type ActivityFunction, type Engine, MetricName, WorkflowAlreadyExistsError, type WorkflowContext } from 'duraflow';

import { clockAhead } from '../helpers/clock.js';
import { backends, lockTable, serverBackends, type TestSchema, useSchema } from '../helpers/database.js';
import { readMetric, startEngine } from '../helpers/engines.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { waitFor } from '../helpers/wait-for.js';

/*
 * An in-process start runs the workflow's first step before its row is committed, and the id may
 * turn out to be taken. Until the commit, whatever reaches that actor waits: if the start is
 * refused, it belongs to the stored workflow of that id. These tests hold tables or answers to
 * keep a creation uncommitted on purpose, so they run on a Postgres server.
 */

async function waitsForGo(ctx: WorkflowContext): Promise<unknown> {
  return ctx.waitForEvent('go');
}

async function twoNotes(ctx: WorkflowContext): Promise<unknown> {
  return [await ctx.waitForEvent('n'), await ctx.waitForEvent('n')];
}

async function idle(ctx: WorkflowContext): Promise<unknown> {
  return ctx.waitForEvent('never');
}

/** Waits to be told to sleep: the step that takes the 'sleep' event writes a timer row. */
async function sleepsWhenTold(ctx: WorkflowContext): Promise<unknown> {
  await ctx.waitForEvent('sleep');
  await ctx.sleep(600_000);
  return 'slept';
}

let runs = 0;
let finishRun: ((value: string) => void)[] = [];
/** An inline activity the test finishes by hand; counts its runs. */
const held: ActivityFunction = () =>
  new Promise<string>((resolve) => {
    runs++;
    finishRun.push(resolve);
  });

async function callsHeld(ctx: WorkflowContext): Promise<unknown> {
  return ctx.activities<{ held(): Promise<string> }>().held();
}

let quickRuns = 0;
const quick: ActivityFunction = () => {
  quickRuns++;
  return 'done';
};

async function workAndNote(ctx: WorkflowContext): Promise<unknown> {
  const { quick } = ctx.activities<{ quick(): Promise<string> }>();
  return Promise.all([quick(), ctx.waitForEvent('n')]);
}

/** An engine whose connections go through a fault proxy, so a test can hold the answers. */
async function startBehindProxy(
  db: TestSchema,
  options: Parameters<typeof startEngine>[1],
): Promise<{ engine: Engine; proxy: FaultProxy }> {
  const proxy = await FaultProxy.start();
  const engine = await startEngine({ ...db, database: proxy.url(db.database as string) }, options);
  return { engine, proxy };
}

/**
 * Starts `workflow` as `workflowId` with the answer to its creating flush held: the row commits,
 * but the engine does not know it yet. Returns (wrapped, so awaiting this does not await it) the
 * start once that is so; `proxy.resume()` lets it end.
 */
async function startUnanswered(
  engine: Engine,
  proxy: FaultProxy,
  workflow: (ctx: WorkflowContext) => Promise<unknown>,
  workflowId: string,
): Promise<{ started: Promise<unknown> }> {
  proxy.holdResponsesTo('df_');
  const started = engine.startWorkflow(workflow, undefined, { workflowId });
  started.catch(() => undefined);
  await proxy.whenResponseHeld();
  return { started };
}

/** Starts workflow 'sleepy', which parks (and so leaves a full cache to the next start). */
async function parkSleepy(engine: Engine): Promise<void> {
  await engine.startWorkflow(sleepsWhenTold, undefined, { workflowId: 'sleepy' });
  await mailboxesEmpty(engine, 'sleepy to park');
}

/**
 * Another workflow's flush, stuck on a lock of the timers table until `release()`, keeps the WAL
 * busy: 'sleepy' (see `parkSleepy`), brought back into memory by an event, as a start would not be
 * when the cache is full.
 */
async function stickAFlush(engine: Engine, db: TestSchema): Promise<{ release(): Promise<void> }> {
  const lock = await lockTable(db, 'timers');
  void engine.sendEvent('sleepy', 'sleep').catch(() => undefined);
  return lock;
}

/**
 * Starts workflow 'x', whose activity then runs until the test finishes it, and evicts x from the
 * one-actor cache; leaves 'sleepy' parked there, which a new start may evict.
 */
async function startXAndEvictIt(engine: Engine): Promise<void> {
  runs = 0;
  finishRun = [];
  // x takes the place of a parked workflow...
  await parkSleepy(engine);
  await engine.startWorkflow(callsHeld, undefined, { workflowId: 'x' });
  await waitFor(async () => runs === 1, 'the activity to run');
  // ...which an event brings back, pushing x out while its activity runs (a start would wait for
  // x's activity instead).
  await engine.sendEvent('sleepy', 'nudge');
  await waitFor(async () => (await readMetric(engine, MetricName.ActorEvictions)) === 2, 'x to be evicted');
  await mailboxesEmpty(engine, 'the event to be taken');
  await waitFor(async () => (await readMetric(engine, MetricName.WalPendingEvents)) === 0, 'the event to be committed');
}

/** Ends the run of x's activity and waits until an actor has taken its result. */
async function finishXsActivity(engine: Engine): Promise<void> {
  finishRun[0]!('run 1');
  await waitFor(async () => (await readMetric(engine, MetricName.ActivityAttempts)) === 1, 'the outcome to arrive');
  await mailboxesEmpty(engine, 'the outcome to be taken');
}

/** x ends with the result of its activity's one run. */
async function expectXRanOnce(engine: Engine): Promise<void> {
  expect(await engine.result('x', { timeoutMs: 10_000 })).toBe('run 1');
  expect(runs).toBe(1);
}

/** Its one activity fails, and is retried an hour later. */
async function retriedInAnHour(ctx: WorkflowContext): Promise<unknown> {
  const { declined } = ctx.activities<{ declined(): Promise<string> }>({ retry: { initialIntervalMs: 3_600_000 } });
  return declined();
}

/** Ends in its first step, leaving the activity it started behind. */
async function leavesAnActivity(ctx: WorkflowContext): Promise<unknown> {
  void ctx.activities<{ quick(): Promise<string> }>().quick();
  return 'left';
}

async function mailboxesEmpty(engine: Engine, what: string): Promise<void> {
  await waitFor(async () => (await readMetric(engine, MetricName.MailboxMessages)) === 0, what);
}

describe.each(backends)('two starts of one id on $name', (backend) => {
  const schema = useSchema(backend);

  it('runs the winner of two starts of one id at once, not at the next poll', async () => {
    const engine = await startEngine(schema(), { workflows: { waitsForGo }, pollIntervalMs: 600_000 });
    try {
      const starts = await Promise.allSettled([0, 1].map(() => engine.startWorkflow(waitsForGo, undefined, { workflowId: 'twice' })));
      expect(starts.map((s) => s.status).sort()).toEqual(['fulfilled', 'rejected']);
      expect(starts.find((s) => s.status === 'rejected')).toMatchObject({ reason: expect.any(WorkflowAlreadyExistsError) });
      await engine.sendEvent('twice', 'go', 'once');
      expect(await engine.result('twice', { timeoutMs: 10_000 })).toBe('once');
    } finally {
      await engine.close();
    }
  });

  it("leaves the stored workflow's retry state alone when a refused start's first step abandons an activity", async () => {
    const db = schema();
    const options = {
      workflows: { retriedInAnHour, leavesAnActivity },
      inlineActivities: {
        declined: () => Promise.reject(new Error('card declined')),
        quick,
      },
    };
    const taskRows = (): Promise<unknown[]> =>
      db.query(`SELECT command_id, attempt FROM "${db.schema}".activity_tasks WHERE workflow_id = 'sub'`);
    const first = await startEngine(db, options);
    try {
      await first.startWorkflow(retriedInAnHour, undefined, { workflowId: 'sub' });
      await waitFor(async () => (await taskRows()).length === 1, 'the retry state of sub');
    } finally {
      await first.close();
    }
    // Restarted, the engine does not hold sub in memory: a start of its id runs its first step,
    // which ends the new workflow and with it (deletes) the task of the activity it started.
    const second = await startEngine(db, options);
    try {
      await expect(second.startWorkflow(leavesAnActivity, undefined, { workflowId: 'sub' })).rejects.toBeInstanceOf(
        WorkflowAlreadyExistsError,
      );
      expect(await taskRows()).toEqual([{ command_id: 1, attempt: 2 }]);
    } finally {
      await second.close();
    }
  });
});

describe.each(serverBackends)('a start not yet committed on $name', (backend) => {
  const schema = useSchema(backend);

  it("leaves the stored workflow's events to it, even when they reach the refused one first", async () => {
    const db = schema();
    const first = await startEngine(db, { workflows: { waitsForGo } });
    await first.startWorkflow(waitsForGo, undefined, { workflowId: 'x' });
    await first.close();

    // No poll: it would find the event in the inbox by itself, without the hand-on under test.
    const engine = await startEngine(db, { workflows: { waitsForGo, idle }, pollIntervalMs: 600_000 });
    // Every flush writes wal_commits: holding it holds both flushes in flight, so the duplicate
    // start's write waits in the pending batch, where later writes of its id would join it.
    const lock = await lockTable(db, 'wal_commits');
    try {
      const others = [engine.startWorkflow(idle, undefined)];
      await waitFor(async () => (await readMetric(engine, MetricName.WalFlushesInFlight)) === 1, 'a first flush in flight');
      others.push(engine.startWorkflow(idle, undefined));
      await waitFor(async () => (await readMetric(engine, MetricName.WalFlushesInFlight)) === 2, 'a second flush in flight');
      const duplicate = engine.startWorkflow(waitsForGo, undefined, { workflowId: 'x' });
      duplicate.catch(() => undefined);
      await waitFor(async () => (await readMetric(engine, MetricName.WalPendingEvents)) > 0, 'the duplicate start to be pending');
      await engine.sendEvent('x', 'go', 'for the stored x');
      await mailboxesEmpty(engine, 'the event to be handled');
      await lock.release();
      await expect(duplicate).rejects.toBeInstanceOf(WorkflowAlreadyExistsError);
      await Promise.all(others);
      expect(await engine.result('x', { timeoutMs: 10_000 })).toBe('for the stored x');
    } finally {
      await lock.release();
      await engine.close();
    }
  });

  it("hands the stored workflow's activity result to it, once, when it reaches the refused one first", async () => {
    const db = schema();
    const engine = await startEngine(db, {
      workflows: { callsHeld, sleepsWhenTold },
      inlineActivities: { held },
      maxCachedWorkflows: 1,
      pollIntervalMs: 600_000,
    });
    let lock: { release(): Promise<void> } | undefined;
    try {
      await startXAndEvictIt(engine);
      lock = await lockTable(db, 'wal_commits');
      const duplicate = engine.startWorkflow(callsHeld, undefined, { workflowId: 'x' });
      duplicate.catch(() => undefined);
      await waitFor(async () => (await readMetric(engine, MetricName.WalFlushesInFlight)) === 1, 'the duplicate start in flight');
      await finishXsActivity(engine);
      await lock.release();
      await expect(duplicate).rejects.toBeInstanceOf(WorkflowAlreadyExistsError);
      await expectXRanOnce(engine);
    } finally {
      for (const finish of finishRun) finish('late');
      await lock?.release();
      await engine.close();
    }
  });

  it('gives a stored start that waits for room the events sent before the engine heard of its commit', async () => {
    const db = schema();
    const { engine, proxy } = await startBehindProxy(db, {
      workflows: { twoNotes, callsHeld },
      inlineActivities: { held },
      maxCachedWorkflows: 1,
      pollIntervalMs: 600_000,
    });
    runs = 0;
    finishRun = [];
    try {
      // The cache's one place is taken by a workflow awaiting an activity: the start is stored alone.
      await engine.startWorkflow(callsHeld, undefined, { workflowId: 'busy' });
      await waitFor(async () => runs === 1, 'the activity to run');
      const { started } = await startUnanswered(engine, proxy, twoNotes, 'notes');
      // Stored, so accepted; it reaches the workflow before its start does, and is left in the inbox.
      await engine.sendEvent('notes', 'n', 'first');
      await mailboxesEmpty(engine, 'the event to be taken');
      proxy.resume();
      await started;
      // No poll for ten minutes: only the start itself can bring the event back.
      await waitFor(async () => (await engine.inspect('notes')).history.some((e) => e.type === 'EventReceived'), 'the first event');
      await engine.sendEvent('notes', 'n', 'second');
      expect(await engine.result('notes', { timeoutMs: 10_000 })).toEqual(['first', 'second']);
    } finally {
      for (const finish of finishRun) finish('late');
      await engine.close();
      await proxy.close();
    }
  });

  it('delivers events held during the creation before later ones, once it commits', async () => {
    const db = schema();
    const { engine, proxy } = await startBehindProxy(db, {
      workflows: { twoNotes, sleepsWhenTold },
      walHighWaterEvents: 2,
      pollIntervalMs: 600_000,
    });
    let lock: { release(): Promise<void> } | undefined;
    try {
      await parkSleepy(engine);
      const { started: created } = await startUnanswered(engine, proxy, twoNotes, 'notes');
      await engine.sendEvent('notes', 'n', 'first');
      await mailboxesEmpty(engine, 'the first event to be held');
      // A congested WAL: a run that takes the next event waits for room with it.
      lock = await stickAFlush(engine, db);
      await waitFor(async () => (await readMetric(engine, MetricName.WalPendingEvents)) > 2, 'the WAL to be congested');
      await engine.sendEvent('notes', 'n', 'second');
      await waitFor(async () => (await readMetric(engine, MetricName.MailboxMessages)) === 1, 'the second event to be taken');
      proxy.resume();
      await created;
      expect(await engine.result('notes', { timeoutMs: 10_000 })).toEqual(['first', 'second']);
    } finally {
      await lock?.release();
      await engine.close();
      await proxy.close();
    }
  });

  it("hands on the stored workflow's activity result even when the WAL is congested at the time", async () => {
    const db = schema();
    const { engine, proxy } = await startBehindProxy(db, {
      workflows: { callsHeld, sleepsWhenTold },
      inlineActivities: { held },
      maxCachedWorkflows: 1,
      walHighWaterEvents: 2,
      pollIntervalMs: 600_000,
    });
    let lock: { release(): Promise<void> } | undefined;
    try {
      await startXAndEvictIt(engine);
      // The duplicate's flush runs (and is refused), but its answer is held.
      const { started: duplicate } = await startUnanswered(engine, proxy, callsHeld, 'x');
      lock = await stickAFlush(engine, db);
      await waitFor(async () => (await readMetric(engine, MetricName.WalPendingEvents)) > 2, 'the WAL to be congested');
      // The result reaches the duplicate's actor, which must hold it at once rather than wait
      // for room in the WAL with it in hand.
      await finishXsActivity(engine);
      proxy.resume();
      await expect(duplicate).rejects.toBeInstanceOf(WorkflowAlreadyExistsError);
      await lock.release();
      await expectXRanOnce(engine);
    } finally {
      for (const finish of finishRun) finish('late');
      await lock?.release();
      await engine.close();
      await proxy.close();
    }
  });

  it('keeps one actor per workflow when a full cache is trimmed at the creation commit', async () => {
    quickRuns = 0;
    const db = schema();
    const { engine, proxy } = await startBehindProxy(db, {
      workflows: { workAndNote, sleepsWhenTold },
      inlineActivities: { quick },
      maxCachedWorkflows: 1,
      pollIntervalMs: 600_000,
    });
    let lock: { release(): Promise<void> } | undefined;
    try {
      await parkSleepy(engine);
      const { started: created } = await startUnanswered(engine, proxy, workAndNote, 'w');
      await engine.sendEvent('w', 'n', 'note');
      await mailboxesEmpty(engine, 'the event to be held');
      // A second actor that stays busy fills the one-actor cache.
      lock = await stickAFlush(engine, db);
      await waitFor(async () => (await readMetric(engine, MetricName.WalFlushesInFlight)) === 2, 'the second flush in flight');
      proxy.resume();
      await created;
      expect(await engine.result('w', { timeoutMs: 10_000 })).toEqual(['done', 'note']);
      // Two actors of one workflow would have written the same history seq: a failed flush and
      // the activity run again.
      expect(await readMetric(engine, MetricName.WalFlushErrors)).toBe(0);
      expect(quickRuns).toBe(1);
    } finally {
      await lock?.release();
      await engine.close();
      await proxy.close();
    }
  });

  it('acknowledges a start whose creating flush committed when its lost answer stays unknown past the hour its token is kept', async () => {
    runs = 0;
    finishRun = [];
    const db = schema();
    const { engine, proxy } = await startBehindProxy(db, { workflows: { callsHeld }, inlineActivities: { held }, pollIntervalMs: 600_000 });
    let clock: { restore(): void } | undefined;
    try {
      const { started } = await startUnanswered(engine, proxy, callsHeld, 'x');
      // The answer is lost and the database stays away.
      await proxy.refuse();
      proxy.cutAll();
      proxy.resume();
      await waitFor(async () => (await readMetric(engine, MetricName.WalFlushErrors)) > 0, 'the lost answer to be seen');
      expect(await db.query(`SELECT id FROM "${db.schema}".workflows`)).toEqual([{ id: 'x' }]);
      // Away past the hour: a cleanup deletes the token of the flush that committed.
      await db.query(`DELETE FROM "${db.schema}".wal_commits`);
      clock = clockAhead(2 * 3_600_000);
      await proxy.accept();
      await started;
      await waitFor(() => runs === 1, 'the activity to run');
      finishRun[0]!('run 1');
      await expectXRanOnce(engine);
      expect(await db.query(`SELECT type FROM "${db.schema}".history WHERE workflow_id = 'x' ORDER BY seq`)).toEqual([
        { type: 'WorkflowStarted' },
        { type: 'ActivityScheduled' },
        { type: 'ActivityCompleted' },
        { type: 'WorkflowCompleted' },
      ]);
    } finally {
      clock?.restore();
      for (const finish of finishRun) finish('late');
      await engine.close();
      await proxy.close();
    }
  });
});
