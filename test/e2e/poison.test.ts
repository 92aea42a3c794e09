/**
 * Poison workflows and activities: code that throws, loops on events, diverges from its history,
 * hangs, blocks or kills its thread, exhausts its heap, or returns what JSON cannot hold. Each must
 * fail (or keep running) on its own, visibly, while the workflows around it complete and the
 * engine goes on running new activities.
 */
import { randomUUID } from 'node:crypto';
import { BroadcastChannel } from 'node:worker_threads';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import {
  ActivityFailure,
  type Engine,
  type WorkflowContext,
  WorkflowClosedError,
  WorkflowFailedError,
} from 'duraflow';

import { backends, type TestSchema } from '../helpers/database.js';
import { openClient, startEngine, waitUntilParked } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

import type { AbortReport, StartReport } from '../fixtures/poison-activities.js';

type Poison = typeof import('../fixtures/poison-activities.js');

const poisonActivities = new URL('../../dist/test/fixtures/poison-activities.js', import.meta.url);

/** An error as a workflow reports it back to the test (plain JSON). */
interface Caught {
  name: string;
  code?: string;
  message: string;
  activityName?: string;
  attempts?: number;
  cause?: { name: string; code?: string; message: string };
}

function caught(error: unknown): Caught {
  const e = error as Partial<ActivityFailure> & { cause?: { name?: string; code?: string; message?: string } };
  return {
    name: String(e?.name),
    message: String(e?.message),
    ...(typeof e?.code === 'string' ? { code: e.code } : {}),
    ...(typeof e?.activityName === 'string' ? { activityName: e.activityName } : {}),
    ...(typeof e?.attempts === 'number' ? { attempts: e.attempts } : {}),
    ...(e?.cause
      ? {
          cause: {
            name: String(e.cause.name),
            message: String(e.cause.message),
            ...(typeof e.cause.code === 'string' ? { code: e.cause.code } : {}),
          },
        }
      : {}),
  };
}

/**
 * A BroadcastChannel of a fresh name, on which the poison activities in their threads report to
 * the test; `reports` collects what they post.
 */
function reportsOnChannel<Report>(): { channel: BroadcastChannel; channelName: string; reports: Report[] } {
  const channelName = `duraflow-poison-${randomUUID()}`;
  const channel = new BroadcastChannel(channelName);
  const reports: Report[] = [];
  channel.onmessage = (event) => reports.push((event as { data: Report }).data);
  return { channel, channelName, reports };
}

// --- workflows ---

/** The well-behaved neighbour: five activities and a timer; returns 10n + 20. */
async function normal(ctx: WorkflowContext, n: number): Promise<number> {
  const { double } = ctx.activities<Poison>({ retry: { initialIntervalMs: 20 } });
  let total = 0;
  for (let i = 0; i < 5; i++) {
    total += await double(n + i);
    if (i === 2) await ctx.sleep(5);
  }
  return total;
}
const normalResult = (n: number): number => 10 * n + 20;

interface PoisonCall {
  activity: keyof Poison;
  arg?: unknown;
  timeoutMs?: number;
  maxAttempts: number;
}

/** Calls one poison activity and returns its result or how it failed. */
async function poisoned(ctx: WorkflowContext, input: PoisonCall): Promise<{ value?: unknown; error?: Caught }> {
  const stubs = ctx.activities<Record<string, (arg: unknown) => Promise<unknown>>>({
    retry: { maxAttempts: input.maxAttempts, initialIntervalMs: 10 },
    ...(input.timeoutMs === undefined ? {} : { startToCloseTimeoutMs: input.timeoutMs }),
  });
  try {
    const value = await stubs[input.activity]!(input.arg);
    // A value too large to be a workflow result is reported by its size.
    const json = JSON.stringify(value);
    return json !== undefined && json.length > 1_000 ? { value: `${json.length} characters of JSON` } : { value };
  } catch (error) {
    return { error: caught(error) };
  }
}

class PoisonedWorkflowError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PoisonedWorkflowError';
  }
}

/** Throws after one activity. */
async function throws(ctx: WorkflowContext): Promise<never> {
  const { double } = ctx.activities<Poison>();
  await double(1);
  throw new PoisonedWorkflowError('poisoned on purpose');
}

/** Throws something that is not an Error, chosen by the input. */
async function throwsOddly(_ctx: WorkflowContext, kind: string): Promise<never> {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  switch (kind) {
    case 'string':
      throw 'a thrown string';
    case 'null':
      throw null;
    case 'undefined':
      throw undefined;
    case 'number':
      throw 42;
    case 'object':
      throw { name: 'PlainObject', message: 'a plain object', extra: cyclic };
    case 'cyclic-cause': {
      const error = new Error('cause loops', { cause: cyclic });
      (error as { cause: unknown }).cause = error;
      throw error;
    }
    case 'bigint-details': {
      throw Object.assign(new Error('details are not JSON'), { details: { n: 1n }, code: 42 });
    }
    case 'throwing-getter':
      throw {
        get message(): string {
          throw new Error('the message getter throws');
        },
      };
    case 'revoked-proxy': {
      // Even `instanceof` throws on it.
      const { proxy, revoke } = Proxy.revocable({}, {});
      revoke();
      throw proxy;
    }
    case 'megabytes':
      throw Object.assign(new Error('m'.repeat(4_000_000)), { details: { blob: 'd'.repeat(4_000_000) } });
    default:
      throw new Error(`unknown kind ${kind}`);
  }
}

/** Waits for events `x` forever, counting them. */
async function eventLoop(ctx: WorkflowContext): Promise<never> {
  let count = 0;
  let sum = 0;
  for (;;) {
    const payload = await ctx.waitForEvent<number>('x');
    count++;
    sum += payload;
    ctx.setVar('count', count);
    ctx.setVar('sum', sum);
  }
}

/** Waits for `go`, then runs an activity. */
async function waitsThenWorks(ctx: WorkflowContext, n: number): Promise<number> {
  const { double } = ctx.activities<Poison>();
  await ctx.waitForEvent('go');
  return double(n);
}

describe.each(backends)('poison workflows and activities on $name', (backend) => {
  let db: TestSchema;
  beforeEach(async () => {
    db = await backend.schema();
  });
  afterEach(async () => {
    await db.drop();
  });

  /**
   * Runs `call` in a `poisoned` workflow with neighbours: three started with it, one started
   * once its first attempt has failed, one after it ended. Every neighbour must complete with
   * its result. Returns what the poisoned workflow returned.
   */
  async function isolated(engine: Engine, call: PoisonCall): Promise<{ value?: unknown; error?: Caught }> {
    const [victim, ...neighbours] = await Promise.all([
      engine.startWorkflow(poisoned, call),
      engine.startWorkflow(normal, 1),
      engine.startWorkflow(normal, 2),
      engine.startWorkflow(normal, 3),
    ]);
    await waitFor(async () => {
      const s = await engine.inspect(victim!.workflowId);
      return s.status !== 'running' || s.waitingOn.activities.some((a) => a.lastFailure !== undefined);
    }, 'the first failed attempt of the poisoned activity');
    neighbours.push(await engine.startWorkflow(normal, 4));
    const out = await victim!.result();
    expect(await Promise.all(neighbours.map((h) => h.result()))).toEqual([1, 2, 3, 4].map(normalResult));
    // Afterwards the engine still runs new activities.
    const after = await engine.startWorkflow(normal, 100);
    expect(await after.result()).toBe(normalResult(100));
    return out;
  }

  it('fails a workflow that throws with its error; the others complete', async () => {
    const engine = await startEngine(db, { workflows: { throws, normal }, activities: poisonActivities });
    try {
      const [bad, ...good] = await Promise.all([
        engine.startWorkflow(throws, undefined),
        engine.startWorkflow(normal, 1),
        engine.startWorkflow(normal, 2),
      ]);
      const error = await bad!.result().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(WorkflowFailedError);
      expect((error as WorkflowFailedError).cause).toMatchObject({ name: 'PoisonedWorkflowError', message: 'poisoned on purpose' });
      const state = await engine.inspect(bad!.workflowId);
      expect(state.status).toBe('failed');
      expect(state.error).toMatchObject({ name: 'PoisonedWorkflowError', message: 'poisoned on purpose' });
      expect(state.history.at(-1)).toMatchObject({ type: 'WorkflowFailed', failure: { name: 'PoisonedWorkflowError' } });
      await expect(engine.sendEvent(bad!.workflowId, 'late')).rejects.toBeInstanceOf(WorkflowClosedError);
      expect(await Promise.all(good.map((h) => h.result()))).toEqual([normalResult(1), normalResult(2)]);
      expect(await (await engine.startWorkflow(normal, 7)).result()).toBe(normalResult(7));
    } finally {
      await engine.close();
    }
  });

  it('fails a workflow that throws a non-Error (string, null, cyclic object, BigInt details) with a readable error', async () => {
    const engine = await startEngine(db, { workflows: { throwsOddly, normal }, activities: poisonActivities });
    try {
      const kinds = ['string', 'null', 'undefined', 'number', 'object', 'cyclic-cause', 'bigint-details'];
      const handles = await Promise.all(kinds.map((kind) => engine.startWorkflow(throwsOddly, kind, { workflowId: `odd-${kind}` })));
      const neighbour = await engine.startWorkflow(normal, 5);
      const outcomes: Record<string, unknown> = {};
      for (const [i, handle] of handles.entries()) {
        const error = await handle.result({ timeoutMs: 10_000 }).then(
          () => 'completed',
          (e: unknown) => e,
        );
        const state = await engine.inspect(handle.workflowId);
        outcomes[kinds[i]!] = {
          isWorkflowFailedError: error instanceof WorkflowFailedError,
          status: state.status,
          hasReadableMessage: typeof state.error?.message === 'string',
        };
      }
      const expected = { isWorkflowFailedError: true, status: 'failed', hasReadableMessage: true };
      expect(outcomes).toEqual(Object.fromEntries(kinds.map((k) => [k, expected])));
      expect((await engine.inspect('odd-string')).error?.message).toContain('a thrown string');
      expect((await engine.inspect('odd-object')).error).toMatchObject({ name: 'PlainObject', message: 'a plain object' });
      expect(await neighbour.result()).toBe(normalResult(5));
    } finally {
      await engine.close();
    }
  });

  it('fails a workflow that throws an object whose message getter throws; the engine survives', async () => {
    const engine = await startEngine(db, { workflows: { throwsOddly, normal }, activities: poisonActivities });
    try {
      const handle = await engine.startWorkflow(throwsOddly, 'throwing-getter', { workflowId: 'odd-getter' });
      const neighbour = await engine.startWorkflow(normal, 6);
      expect(await neighbour.result()).toBe(normalResult(6));
      // Nothing else to wait on: the workflow's one step must end it (failed) within a few seconds.
      const error = await handle.result({ timeoutMs: 3_000 }).catch((e: unknown) => e);
      const state = await engine.inspect('odd-getter');
      expect({ error: (error as Error).name, status: state.status }).toEqual({ error: 'WorkflowFailedError', status: 'failed' });
      expect(await (await engine.startWorkflow(normal, 8)).result()).toBe(normalResult(8));
    } finally {
      await engine.close();
    }
  });

  it('fails a workflow that throws a revoked proxy, or an error of megabytes, with a readable error of bounded size', async () => {
    const engine = await startEngine(db, { workflows: { throwsOddly, normal }, activities: poisonActivities });
    try {
      const proxy = await engine.startWorkflow(throwsOddly, 'revoked-proxy', { workflowId: 'odd-proxy' });
      const huge = await engine.startWorkflow(throwsOddly, 'megabytes', { workflowId: 'odd-huge' });
      for (const handle of [proxy, huge]) await expect(handle.result({ timeoutMs: 10_000 })).rejects.toBeInstanceOf(WorkflowFailedError);
      expect((await engine.inspect('odd-proxy')).error).toMatchObject({ name: 'Error', message: 'non-error thrown: object' });
      const { error } = await engine.inspect('odd-huge');
      expect(error?.message).toMatch(/^m+… \(3967232 more characters left out\)$/);
      expect(error?.stack?.length).toBeLessThan(40_000);
      expect(error?.details).toBeUndefined();
      expect(await (await engine.startWorkflow(normal, 9)).result()).toBe(normalResult(9));
    } finally {
      await engine.close();
    }
  });

  it('keeps a workflow that loops forever on events working through 200 events, with its history', async () => {
    const engine = await startEngine(db, { workflows: { eventLoop, normal }, activities: poisonActivities });
    const client = await openClient(db);
    try {
      const looper = await engine.startWorkflow(eventLoop, undefined, { workflowId: 'looper' });
      const neighbour = await engine.startWorkflow(normal, 9);
      // Half from the engine, half from a client, all at once.
      await Promise.all(
        Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? engine : client).sendEvent(looper.workflowId, 'x', i)),
      );
      expect(await neighbour.result()).toBe(normalResult(9));
      const stored = await waitFor(async () => {
        const s = await client.inspect('looper');
        return s.vars.count === 200 && s;
      }, 'the 200 events to be consumed and committed');
      expect(stored.status).toBe('running');
      expect(stored.vars).toEqual({ count: 200, sum: (199 * 200) / 2 });
      const received = stored.history.filter((e) => e.type === 'EventReceived');
      expect(received).toHaveLength(200);
      expect(received.map((e) => (e as { payload?: unknown }).payload).sort((a, b) => Number(a) - Number(b))).toEqual(
        Array.from({ length: 200 }, (_, i) => i),
      );
      expect(stored.history.filter((e) => e.type === 'EventWaitStarted').length).toBeGreaterThanOrEqual(1);
      expect(stored.waitingOn.events).toEqual([expect.objectContaining({ eventName: 'x' })]);
      expect(stored.queuedEvents).toEqual([]);
      expect((await engine.inspect('looper')).vars).toEqual({ count: 200, sum: 19_900 });
      // Still taking events, and the engine still runs other work.
      await engine.sendEvent('looper', 'x', 1000);
      await waitFor(async () => (await client.inspect('looper')).vars.count === 201, 'event 201');
      expect(await (await engine.startWorkflow(normal, 10)).result()).toBe(normalResult(10));
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('parks a workflow with NonDeterminismError while the others complete', async () => {
    async function changing(ctx: WorkflowContext): Promise<string> {
      const { double } = ctx.activities<Poison>();
      await double(1);
      await ctx.waitForEvent('go');
      return 'v1 done';
    }
    const v1 = await startEngine(db, { workflows: { changing, waitsThenWorks }, activities: poisonActivities });
    try {
      await v1.startWorkflow(changing, undefined, { workflowId: 'diverging' });
      await Promise.all([1, 2, 3].map((n) => v1.startWorkflow(waitsThenWorks, n, { workflowId: `steady-${n}` })));
      await waitFor(async () => {
        const states = await Promise.all(['diverging', 'steady-1', 'steady-2', 'steady-3'].map((id) => v1.inspect(id)));
        return states.every((s) => s.history.some((e) => e.type === 'EventWaitStarted'));
      }, 'every workflow to wait for go');
    } finally {
      await v1.close();
    }

    // Same name, other code: the first command is now a timer, not an activity.
    async function changed(ctx: WorkflowContext): Promise<string> {
      await ctx.sleep(1);
      await ctx.waitForEvent('go');
      return 'v2 done';
    }
    const v2 = await startEngine(db, {
      workflows: { changing: changed, waitsThenWorks, normal },
      activities: poisonActivities,
    });
    try {
      await Promise.all(['diverging', 'steady-1', 'steady-2', 'steady-3'].map((id) => v2.sendEvent(id, 'go')));
      const fresh = await v2.startWorkflow(normal, 11);
      const parked = await waitUntilParked(v2, 'diverging');
      expect(parked.error!.message).toMatch(/diverged from its history at activation 1, command #1/);
      expect(await Promise.all([1, 2, 3].map((n) => v2.result(`steady-${n}`)))).toEqual([2, 4, 6]);
      expect(await fresh.result()).toBe(normalResult(11));
      // Events to the parked workflow are kept; it stays parked and changes nothing else.
      await v2.sendEvent('diverging', 'go', 'again');
      expect(await (await v2.startWorkflow(normal, 12)).result()).toBe(normalResult(12));
    } finally {
      await v2.close();
    }
    // Closing drained every mailbox and flushed every write, the parked actor's included: what
    // the database holds now is all it did with both events.
    const client = await openClient(db);
    try {
      const still = await client.inspect('diverging');
      expect(still.status).toBe('running');
      expect(still.error?.name).toBe('NonDeterminismError');
      expect(still.history.filter((e) => e.type === 'EventReceived')).toHaveLength(0);
      expect(still.queuedEvents).toEqual([{ eventName: 'go' }, { eventName: 'go', payload: 'again' }]);
    } finally {
      await client.close();
    }
  });

  it('aborts the signal of an activity that hangs past startToCloseTimeoutMs and retries it per policy', async () => {
    const { channel, channelName, reports } = reportsOnChannel<AbortReport>();
    const engine = await startEngine(db, { workflows: { poisoned, normal }, activities: poisonActivities });
    try {
      const out = await isolated(engine, { activity: 'hangForever', arg: { channel: channelName }, timeoutMs: 300, maxAttempts: 2 });
      expect(out.error).toMatchObject({
        name: 'ActivityFailure',
        code: 'DURAFLOW_ACTIVITY_FAILURE',
        activityName: 'hangForever',
        attempts: 2,
        cause: { name: 'TimeoutError', code: 'DURAFLOW_TIMEOUT' },
      });
      expect(out.error!.cause!.message).toMatch(/startToCloseTimeoutMs/);
      // The signal aborted in the activity's thread, once per attempt, with the TimeoutError.
      await waitFor(() => reports.length >= 2, 'both abort reports');
      expect(reports.map((r) => [r.attempt, r.reason.name]).sort()).toEqual([
        [1, 'TimeoutError'],
        [2, 'TimeoutError'],
      ]);
    } finally {
      await engine.close();
      channel.close();
    }
  });

  it('counts startToCloseTimeoutMs from the start, not from a wait for a free thread', async () => {
    const engine = await startEngine(db, { workflows: { poisoned }, activities: poisonActivities, activityThreads: 1 });
    try {
      // The only thread is busy for longer than the timeout plus its grace.
      const busy = await engine.startWorkflow(poisoned, { activity: 'sleepMs', arg: 2_000, maxAttempts: 1 });
      await waitFor(async () => (await engine.inspect(busy.workflowId)).waitingOn.activities.length === 1, 'the busy activity');
      const timed = await engine.startWorkflow(poisoned, { activity: 'double', arg: 21, timeoutMs: 200, maxAttempts: 1 });
      expect(await timed.result()).toEqual({ value: 42 });
      expect(await busy.result()).toEqual({ value: 2_000 });
    } finally {
      await engine.close();
    }
  });

  it('terminates a thread that blocks past startToCloseTimeoutMs; the pool replaces it and later activities run', async () => {
    const engine = await startEngine(db, { workflows: { poisoned, normal }, activities: poisonActivities });
    try {
      const started = Date.now();
      const out = await isolated(engine, { activity: 'busyLoop', timeoutMs: 300, maxAttempts: 2 });
      expect(out.error).toMatchObject({ name: 'ActivityFailure', activityName: 'busyLoop', attempts: 2 });
      // Each attempt ended by the thread's termination: timeout + 1 s grace, not much later.
      expect(Date.now() - started).toBeGreaterThanOrEqual(2 * 1_300);
      // Both threads work again: a burst of activities with and without a timeout.
      const burst = await Promise.all([
        ...Array.from({ length: 6 }, (_, i) => engine.startWorkflow(normal, 20 + i)),
        ...Array.from({ length: 2 }, (_, i) =>
          engine.startWorkflow(poisoned, { activity: 'double', arg: i, timeoutMs: 5_000, maxAttempts: 1 }),
        ),
      ]);
      expect(await Promise.all(burst.map((h) => h.result()))).toEqual([
        ...Array.from({ length: 6 }, (_, i) => normalResult(20 + i)),
        { value: 0 },
        { value: 2 },
      ]);
      // README: an attempt past startToCloseTimeoutMs is a TimeoutError, also when its thread had to be killed.
      expect.soft(out.error?.cause?.name, `cause: ${JSON.stringify(out.error?.cause)}`).toBe('TimeoutError');
    } finally {
      await engine.close();
    }
  });

  describe.each([
    ['batched (no timeout)', undefined],
    ['abortable (with startToCloseTimeoutMs)', 10_000],
  ])('thread-killing activities, %s', (_mode, timeoutMs) => {
    it('process.exit(1) in the thread fails only that activity, retried per policy', async () => {
      const engine = await startEngine(db, { workflows: { poisoned, normal }, activities: poisonActivities });
      try {
        const out = await isolated(engine, { activity: 'exitThread', timeoutMs, maxAttempts: 2 });
        expect(out.error).toMatchObject({ name: 'ActivityFailure', activityName: 'exitThread', attempts: 2 });
        expect(out.error!.cause!.message).toMatch(/exit/i);
        expect(out.error!.cause).toMatchObject({ name: 'ActivityThreadError', code: 'DURAFLOW_ACTIVITY_THREAD' });
      } finally {
        await engine.close();
      }
    });

    it('an uncaught error thrown from a callback fails only that activity, retried per policy', async () => {
      const engine = await startEngine(db, { workflows: { poisoned, normal }, activities: poisonActivities });
      try {
        const out = await isolated(engine, { activity: 'throwInCallback', timeoutMs, maxAttempts: 2 });
        expect(out.error).toMatchObject({ name: 'ActivityFailure', activityName: 'throwInCallback', attempts: 2 });
        expect(out.error!.cause!.message).toMatch(/thrown from a timer callback/);
      } finally {
        await engine.close();
      }
    });

    it('running out of heap (activityMaxHeapMb: 64) fails only that activity, retried per policy', async () => {
      const engine = await startEngine(db, {
        workflows: { poisoned, normal },
        activities: poisonActivities,
        activityMaxHeapMb: 64,
      });
      try {
        const out = await isolated(engine, { activity: 'exhaustHeap', timeoutMs, maxAttempts: 2 });
        expect(out.error).toMatchObject({ name: 'ActivityFailure', activityName: 'exhaustHeap', attempts: 2 });
        expect(out.error!.cause!.message).toMatch(/memory|heap/i);
      } finally {
        await engine.close();
      }
    });
  });

  it('fails a call of an activity the module does not export at once, with UnknownActivityError as the cause', async () => {
    const engine = await startEngine(db, { workflows: { poisoned }, activities: poisonActivities });
    try {
      const handle = await engine.startWorkflow(poisoned, { activity: 'noSuchActivity' as keyof Poison, maxAttempts: 5 });
      expect((await handle.result()).error).toMatchObject({
        name: 'ActivityFailure',
        activityName: 'noSuchActivity',
        attempts: 1,
        cause: { name: 'UnknownActivityError', code: 'DURAFLOW_UNKNOWN_ACTIVITY' },
      });
      // Code can call any name: the metrics count them all under one label, not one each.
      const other = await engine.startWorkflow(poisoned, { activity: 'norThisOne' as keyof Poison, maxAttempts: 5 });
      await other.result();
      const attempts = await engine.metrics.getSingleMetric('duraflow_activity_attempts_total')!.get();
      expect(attempts.values.map((v) => [v.labels.activity, v.value])).toEqual([['(unknown)', 2]]);
      // Counted once the failure is stored, under the same label.
      const failures = await engine.metrics.getSingleMetric('duraflow_activity_failures_total')!.get();
      expect(failures.values.map((v) => [v.labels.activity, v.value])).toEqual([['(unknown)', 2]]);
    } finally {
      await engine.close();
    }
  });

  it('fails an activity whose result is not JSON (function, BigInt, symbol, cycle) at once, without retries', async () => {
    const engine = await startEngine(db, { workflows: { poisoned, normal }, activities: poisonActivities });
    try {
      const kinds = ['function', 'bigint', 'symbol', 'cycle', 'nested-function', 'nested-bigint'];
      const calls: [string, PoisonCall][] = [
        ...kinds.map((kind): [string, PoisonCall] => [kind, { activity: 'returnNonJson', arg: kind, maxAttempts: 3 }]),
        ...kinds.map((kind): [string, PoisonCall] => [
          `${kind}, with a timeout`,
          { activity: 'returnNonJson', arg: kind, maxAttempts: 3, timeoutMs: 10_000 },
        ]),
      ];
      const neighbour = await engine.startWorkflow(normal, 30);
      const handles = await Promise.all(calls.map(([, call]) => engine.startWorkflow(poisoned, call)));
      const outcomes = await Promise.all(handles.map((h) => h.result()));
      // Per case: failed for good on the first attempt, with a cause that names the problem.
      const summary = Object.fromEntries(
        calls.map(([what], i) => {
          const { value, error } = outcomes[i]!;
          if (!error) return [what, { succeededWith: value === undefined ? 'undefined' : JSON.stringify(value) }];
          const causeNamesIt = /function|bigint|symbol|circular|cycl|serial|JSON/i.test(error.cause?.message ?? '');
          return [what, { name: error.name, attempts: error.attempts, causeNamesIt }];
        }),
      );
      const failedAtOnce = { name: 'ActivityFailure', attempts: 1, causeNamesIt: true };
      expect(summary).toEqual(Object.fromEntries(calls.map(([what]) => [what, failedAtOnce])));
      expect(await neighbour.result()).toBe(normalResult(30));
      expect(await (await engine.startWorkflow(normal, 31)).result()).toBe(normalResult(31));
    } finally {
      await engine.close();
    }
  });

  it('fails an activity whose result is over maxPayloadBytes with PayloadTooLargeError, without retries', async () => {
    const limit = 64 * 1024;
    const engine = await startEngine(db, { workflows: { poisoned, normal }, activities: poisonActivities, maxPayloadBytes: limit });
    try {
      const handles = await Promise.all([
        engine.startWorkflow(poisoned, { activity: 'returnLarge', arg: limit, maxAttempts: 3 }),
        engine.startWorkflow(poisoned, { activity: 'returnLarge', arg: limit, maxAttempts: 3, timeoutMs: 10_000 }),
        // Exactly at the limit (the JSON string has two quotes) is fine.
        engine.startWorkflow(poisoned, { activity: 'returnLarge', arg: limit - 2, maxAttempts: 3 }),
      ]);
      const [over, overWithTimeout, atLimit] = await Promise.all(handles.map((h) => h.result()));
      const tooLarge = {
        error: expect.objectContaining({
          name: 'ActivityFailure',
          attempts: 1,
          cause: expect.objectContaining({ name: 'PayloadTooLargeError', code: 'DURAFLOW_PAYLOAD_TOO_LARGE' }),
        }),
      };
      expect({ over, overWithTimeout, atLimit }).toEqual({
        over: tooLarge,
        overWithTimeout: tooLarge,
        atLimit: { value: `${limit} characters of JSON` },
      });
      // Nothing over the limit reached the database.
      const rows = await db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM "${db.schema}".history WHERE length(payload) > $1`,
        [limit + 200],
      );
      expect(rows[0]!.n).toBe(0);
      expect(await (await engine.startWorkflow(normal, 32)).result()).toBe(normalResult(32));
    } finally {
      await engine.close();
    }
  });

  it('fails an activity that throws an unreadable value (its message getter throws) on its own; the attempt beside it in the same batch is unaffected', async () => {
    // One thread and two attempts released together: they travel in one batch.
    const engine = await startEngine(db, { workflows: { poisoned, normal }, activities: poisonActivities, activityThreads: 1 });
    try {
      const [neighbour, victim] = await Promise.all([
        engine.startWorkflow(poisoned, { activity: 'sleepMs', arg: 300, maxAttempts: 1 }),
        engine.startWorkflow(poisoned, { activity: 'throwUnreadable', maxAttempts: 2 }),
      ]);
      expect((await victim.result({ timeoutMs: 20_000 })).error).toMatchObject({ name: 'ActivityFailure', activityName: 'throwUnreadable', attempts: 2 });
      expect(await neighbour.result({ timeoutMs: 20_000 })).toEqual({ value: 300 });
      expect(await (await engine.startWorkflow(normal, 40)).result()).toBe(normalResult(40));
    } finally {
      await engine.close();
    }
  });

  it("does not spend another workflow's attempts when a poison activity kills the thread they share", async () => {
    const { channel, channelName, reports: starts } = reportsOnChannel<StartReport>();
    // One thread, so the neighbour's attempt is certainly on the thread the poison kills.
    const engine = await startEngine(db, { workflows: { poisoned }, activities: poisonActivities, activityThreads: 1 });
    try {
      const neighbour = await engine.startWorkflow(poisoned, { activity: 'heldOnChannel', arg: { channel: channelName }, maxAttempts: 1 });
      // Its attempt runs, and runs until released: the poison kills its thread under it.
      await waitFor(() => starts.length === 1, "the neighbour's attempt to start");
      const victim = await engine.startWorkflow(poisoned, { activity: 'exitThread', maxAttempts: 1 });
      expect((await victim.result()).error).toMatchObject({ name: 'ActivityFailure', activityName: 'exitThread' });
      // The neighbour did nothing wrong: its only attempt must not be charged for the crash, and
      // runs again on the new thread.
      await waitFor(() => starts.length === 2, "the neighbour's attempt to run again");
      expect(starts[1]!.activityId).toBe(starts[0]!.activityId);
      channel.postMessage('release');
      expect(await neighbour.result()).toEqual({ value: 'released' });
    } finally {
      channel.close();
      await engine.close();
    }
  });
});
