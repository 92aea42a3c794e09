import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BroadcastChannel } from 'node:worker_threads';

import { afterEach, describe, expect, it } from 'vitest';

// The compiled pool: its threads load compiled JavaScript.
import type { ActivityOutcome } from '../../../dist/engine/activity-context.js';
import { ActivityPool, mustRunAlone, type PoolTask } from '../../../dist/engine/activity-pool.js';
import type { ActivityFunction } from '../../../dist/engine/activity-runner.js';
import type { ActivityContext } from '../../../dist/engine/activity-context.js';
import { fixtureActivities } from '../../helpers/engines.js';
import { waitFor } from '../../helpers/wait-for.js';

type Settle = (outcome: ActivityOutcome | undefined) => void;

const poisonActivities = new URL('../../../dist/test/fixtures/poison-activities.js', import.meta.url);

/** What `run` resolves to for an attempt reported with no outcome (abandoned). */
const ABANDONED = Symbol('abandoned');

interface Run {
  (name: string, input?: unknown, options?: { timeoutMs?: number; isolate?: boolean; workflowName?: string }): Promise<unknown>;
}

async function openPool(
  concurrencyPerThread = 16,
  moduleUrl = fixtureActivities,
  inline: Record<string, ActivityFunction> = {},
  threads = 2,
): Promise<{ pool: ActivityPool; run: Run }> {
  const waiting = new Map<number, Settle>();
  let next = 0;
  const pool = await ActivityPool.create<PoolTask>(
    { moduleUrl, threads, concurrencyPerThread, inline, maxHeapMb: undefined, maxPayloadBytes: 1 << 20 },
    (task, outcome) => waiting.get(task.commandId)?.(outcome),
    (error) => {
      throw error;
    },
  );
  const run: Run = (name, input, options) =>
    new Promise((resolve, reject) => {
      const commandId = next++;
      waiting.set(commandId, (outcome) =>
        outcome === undefined
          ? resolve(ABANDONED)
          : outcome.ok
            ? resolve(outcome.result === undefined ? undefined : JSON.parse(outcome.result))
            : reject(Object.assign(new Error(outcome.failure.message), { failure: outcome.failure })),
      );
      pool.submit(
        { name, input: input === undefined ? undefined : JSON.stringify(input), workflowId: 'w', commandId, attempt: 1 },
        options?.workflowName ?? 'wf',
        options?.timeoutMs,
        options?.isolate,
      );
    });
  return { pool, run };
}

describe('ActivityPool batching', () => {
  let close: (() => Promise<void>) | undefined;
  afterEach(async () => {
    await close?.();
    close = undefined;
  });

  it('sends a few cheap attempts to one thread rather than waking every thread', async () => {
    const { pool, run } = await openPool();
    close = () => pool.close();
    // Teach the pool that these attempts are cheap.
    for (let i = 0; i < 40; i++) await run('threadOf');
    const before = pool.batchesSent;
    const threads = await Promise.all(Array.from({ length: 10 }, () => run('threadOf')));
    expect(pool.batchesSent - before).toBe(1);
    expect(new Set(threads).size).toBe(1);
  });

  it('puts no more cheap attempts in one batch than one thread may run at once', async () => {
    const { pool, run } = await openPool(4);
    close = () => pool.close();
    for (let i = 0; i < 40; i++) await run('threadOf');
    const before = pool.batchesSent;
    await Promise.all(Array.from({ length: 8 }, () => run('threadOf')));
    expect(pool.batchesSent - before).toBe(2);
  });

  it('sends an attempt to an idle pool before the turn ends, and those of a busy one together at its end', async () => {
    const { pool, run } = await openPool();
    close = () => pool.close();
    for (let i = 0; i < 40; i++) await run('threadOf');
    // Idle: sent once this turn's synchronous work and its microtasks are done.
    const idle = pool.batchesSent;
    const first = run('threadOf');
    await Promise.resolve();
    await Promise.resolve();
    expect(pool.batchesSent - idle).toBe(1);
    // Busy (that batch is out): attempts submitted now, in separate microtasks, wait for the end of
    // the turn and go together.
    const busy = pool.batchesSent;
    const more: Promise<unknown>[] = [];
    for (let i = 0; i < 5; i++) {
      more.push(run('threadOf'));
      await Promise.resolve();
    }
    expect(pool.batchesSent - busy).toBe(0);
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(pool.batchesSent - busy).toBe(1);
    await Promise.all([first, ...more]);
  });

  it('sends expensive attempts in separate batches, so each can have a thread of its own', async () => {
    const { pool, run } = await openPool();
    close = () => pool.close();
    // Teach the pool that these attempts are expensive.
    for (let i = 0; i < 20; i++) await run('spin', 5);
    const before = pool.batchesSent;
    await Promise.all([run('spin', 20), run('spin', 20)]);
    // One batch per attempt, so each can have a thread to itself (which thread is Piscina's choice).
    expect(pool.batchesSent - before).toBe(2);
  });
});

describe('ActivityPool attempts with a timeout', () => {
  let close: (() => Promise<void>) | undefined;
  afterEach(async () => {
    await close?.();
    close = undefined;
  });

  it('runs them batched, many at once in a thread, not one per thread', async () => {
    const { pool, run } = await openPool();
    close = () => pool.close();
    const most = await Promise.all(Array.from({ length: 8 }, () => run('gather', { peers: 2, withinMs: 5_000 }, { timeoutMs: 10_000 })));
    expect(Math.max(...(most as number[]))).toBeGreaterThanOrEqual(2);
  });

  it('terminates a thread one of them blocks; it fails with TimeoutError and the attempts beside it run again and succeed', async () => {
    const { pool, run } = await openPool();
    close = () => pool.close();
    // The spin and the first double share a batch: the double's outcome cannot leave the thread.
    const [blocked, ...neighbours] = await Promise.allSettled([
      run('spin', 60_000, { timeoutMs: 100 }),
      run('double', 1),
      run('double', 2, { timeoutMs: 5_000 }),
    ]);
    expect(blocked).toMatchObject({ status: 'rejected', reason: { message: expect.stringMatching(/exceeded startToCloseTimeoutMs \(100 ms\); its thread was terminated/) } });
    expect(neighbours).toEqual([
      { status: 'fulfilled', value: 2 },
      { status: 'fulfilled', value: 4 },
    ]);
    expect(await run('double', 3, { timeoutMs: 1_000 })).toBe(6);
  });

  it('runs an attempt that must be alone beside batch threads busy with long work, holding nothing up', async () => {
    const { pool, run } = await openPool();
    close = () => pool.close();
    // Two attempts that run until the pool closes, one batch each: both batch threads stay busy.
    // (Ones of a few seconds could end first on a loaded machine, where starting the thread for
    // the attempt alone can take longer.)
    let longsDone = 0;
    const longs = [run('hang'), run('hang')].map((p) => p.finally(() => longsDone++));
    for (const long of longs) long.catch(() => undefined);
    await waitFor(() => pool.running === 2, 'both long attempts to run');
    expect(await Promise.all([run('double', 21, { isolate: true }), run('double', 2)])).toEqual([42, 4]);
    expect(longsDone, 'long attempts that ended first').toBe(0);
  });

  it('does not terminate a thread whose attempt timed out in time while the engine thread was busy', async () => {
    const { pool, run } = await openPool();
    close = () => pool.close();
    for (let i = 0; i < 40; i++) await run('threadOf');
    const file = path.join(await mkdtemp(path.join(tmpdir(), 'duraflow-pool-')), 'runs');
    try {
      const timed = run('hang', undefined, { timeoutMs: 200 });
      const neighbour = run('countedWait', { file, ms: 2_500 });
      // The engine's thread is busy from 100 ms to 1,600 ms, past the hard deadline (1,200 ms); the
      // timeout's outcome (at 200 ms) waits in its queue meanwhile.
      setTimeout(() => setImmediate(() => {
        const until = performance.now() + 1_500;
        while (performance.now() < until);
      }), 100);
      await expect(timed).rejects.toThrow(/exceeded startToCloseTimeoutMs \(200 ms\)$/);
      expect(await neighbour).toBe(2_500);
      expect((await readFile(file, 'utf8')).split('\n').filter(Boolean)).toHaveLength(1);
    } finally {
      await rm(path.dirname(file), { recursive: true, force: true });
    }
  });

  it('does not count a fresh thread loading the module as the attempt running past its timeout', async () => {
    const { pool, run } = await openPool(16, new URL('../../../dist/test/fixtures/slow-loading-activities.js', import.meta.url));
    close = () => pool.close();
    // Alone: on a thread of its own, started for it, which first spends 1.5 s loading the module.
    expect(await run('double', 21, { timeoutMs: 100, isolate: true })).toBe(42);
  });

  it('does not terminate the thread of an attempt alone that ended in time while the engine thread was busy', async () => {
    const { pool, run } = await openPool();
    close = () => pool.close();
    await run('double', 1, { isolate: true }); // a single-attempt thread, ready
    const alone = run('wait', 200, { timeoutMs: 300, isolate: true });
    // Busy from 100 ms to 1,700 ms, past the hard deadline (1,300 ms); the outcome (at 200 ms) waits.
    setTimeout(() => setImmediate(() => {
      const until = performance.now() + 1_600;
      while (performance.now() < until);
    }), 100);
    expect(await alone).toBe(200);
  });

  it('counts attempts waiting for a single-attempt thread as queued, not also as running', async () => {
    const { pool, run } = await openPool();
    close = () => pool.close();
    // Two batch threads: eight single-attempt threads at most.
    const alone = Array.from({ length: 10 }, () => run('wait', 1_500, { isolate: true }));
    await waitFor(() => pool.queued === 2, 'two attempts to wait for a thread');
    expect(pool.running).toBe(8);
    await Promise.all(alone);
  });

  it('counts the attempts of a batch waiting for a replacement batch thread as queued, not running', async () => {
    // One batch thread, one attempt at a time: while it is replaced, a batch can only wait.
    const { pool, run } = await openPool(1, poisonActivities, {}, 1);
    close = () => pool.close();
    const cue = new BroadcastChannel(`exit-cue-${randomUUID()}`);
    try {
      const started = new Promise((resolve) => (cue.onmessage = resolve));
      const killer = run('exitOnCue', { channel: cue.name }, { workflowName: 'doomed' });
      await started;
      const neighbours = [run('sleepMs', 1), run('sleepMs', 1)];
      expect({ queued: pool.queued, running: pool.running }).toEqual({ queued: 2, running: 1 });
      // Stopped, the killer is reported with no outcome when its thread goes, not run again alone.
      pool.abandon(new Set(['doomed']));
      const sent = pool.batchesSent;
      cue.postMessage('exit');
      expect(await killer).toBe(ABANDONED);
      // Its slot free, a neighbour goes to Piscina in a batch at once, and waits there for the
      // replacement thread, which takes far longer than a turn to start.
      await new Promise(setImmediate);
      expect(pool.batchesSent).toBe(sent + 1);
      expect({ queued: pool.queued, running: pool.running }).toEqual({ queued: 2, running: 0 });
      expect(await Promise.all(neighbours)).toEqual([1, 1]);
      expect({ queued: pool.queued, running: pool.running }).toEqual({ queued: 0, running: 0 });
    } finally {
      cue.close();
    }
  });

  it('runs an attempt that waited for a single-attempt thread when every attempt ahead of it killed its thread', async () => {
    const { pool, run } = await openPool(16, new URL('../../../dist/test/fixtures/poison-activities.js', import.meta.url));
    close = () => pool.close();
    const crashing = Array.from({ length: 8 }, () => run('exitThread', undefined, { isolate: true }));
    const waiting = run('double', 21, { isolate: true });
    expect((await Promise.allSettled(crashing)).map((o) => o.status)).toEqual(crashing.map(() => 'rejected'));
    expect(await waiting).toBe(42);
  });

  it('settles every attempt when it closes, those waiting for a slot too', async () => {
    const { pool, run } = await openPool(1);
    close = undefined;
    // Two slots (two threads, one attempt each): two run, two wait.
    const attempts = Array.from({ length: 4 }, () => run('wait', 60_000));
    const outcomes = Promise.allSettled(attempts);
    await waitFor(() => pool.running === 2, 'two attempts to run');
    await pool.close();
    expect((await outcomes).map((o) => o.status)).toEqual(['rejected', 'rejected', 'rejected', 'rejected']);
  });

  it('tells an attempt that is handed a single-attempt slot as the pool closes that it may not run', async () => {
    // One batch thread: four single-attempt slots. The first attempt's outcome closes the pool,
    // and hands its slot to the fifth.
    let closing: Promise<void> | undefined;
    const outcomes = new Map<number, ActivityOutcome | undefined>();
    const pool: ActivityPool = await ActivityPool.create<PoolTask>(
      { moduleUrl: fixtureActivities, threads: 1, concurrencyPerThread: 16, inline: {}, maxHeapMb: undefined, maxPayloadBytes: 1 << 20 },
      (task, outcome) => {
        outcomes.set(task.commandId, outcome);
        if (task.commandId === 0) closing ??= pool.close();
      },
      (error) => {
        throw error;
      },
    );
    for (const [commandId, ms] of [300, 60_000, 60_000, 60_000, 60_000].entries()) {
      pool.submit({ name: 'wait', input: JSON.stringify(ms), workflowId: 'w', commandId, attempt: 1 }, 'wf', undefined, true);
    }
    await waitFor(() => closing !== undefined, 'the first attempt to end');
    await closing;
    await waitFor(() => outcomes.size === 5, 'every attempt to settle');
    expect(outcomes.get(4)).toMatchObject({ ok: false, failure: { name: 'EngineClosedError' } });
  });

  it('has an activity run alone from now on after its attempt killed or blocked its thread, not after it failed', async () => {
    const { pool, run } = await openPool(16, new URL('../../../dist/test/fixtures/poison-activities.js', import.meta.url));
    close = () => pool.close();
    // The failures as the engine stores them: the attempt's error, as JSON.
    const lastFailure = async (name: string, options: { timeoutMs?: number; isolate?: boolean }): Promise<string> =>
      run(name, undefined, options).then(
        () => {
          throw new Error(`${name} succeeded`);
        },
        (error: Error) => JSON.stringify((error as Error & { failure: unknown }).failure),
      );
    expect(mustRunAlone(await lastFailure('exitThread', { isolate: true }))).toBe(true);
    expect(mustRunAlone(await lastFailure('busyLoop', { timeoutMs: 100, isolate: true }))).toBe(true);
    expect(mustRunAlone(await lastFailure('throwUnreadable', {}))).toBe(false);
    expect(mustRunAlone(undefined)).toBe(false);
  });
});

/** Lines an `awaitAbort` attempt wrote to `file`: 'started', then its signal's reason ('name code'). */
async function linesOf(file: string): Promise<string[]> {
  return (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean);
}

describe('ActivityPool close', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('aborts the signals of the attempts running in threads, batched or alone, before it ends the threads', async () => {
    const { pool, run } = await openPool();
    dir = await mkdtemp(path.join(tmpdir(), 'duraflow-close-'));
    const batchedFile = path.join(dir, 'batched');
    const aloneFile = path.join(dir, 'alone');
    const outcomes = Promise.allSettled([
      run('awaitAbort', { file: batchedFile, ms: 60_000 }),
      run('awaitAbort', { file: aloneFile, ms: 60_000 }, { isolate: true }),
    ]);
    await waitFor(async () => (await linesOf(batchedFile)).length === 1 && (await linesOf(aloneFile)).length === 1, 'both attempts to start');
    await pool.close();
    // The threads are gone: what their attempts wrote is all they will ever write.
    expect(await linesOf(batchedFile)).toEqual(['started', 'EngineClosedError DURAFLOW_ENGINE_CLOSED']);
    expect(await linesOf(aloneFile)).toEqual(['started', 'EngineClosedError DURAFLOW_ENGINE_CLOSED']);
    await outcomes;
  });
});

describe('ActivityPool attempts of a workflow name another engine took over', () => {
  let close: (() => Promise<void>) | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await close?.();
    close = undefined;
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('never starts queued ones, aborts the signals of running ones with NameTakenOverError, and reports none', async () => {
    // Two threads of one attempt each: a third attempt waits in the queue.
    const { pool, run } = await openPool(1);
    close = () => pool.close();
    dir = await mkdtemp(path.join(tmpdir(), 'duraflow-abandon-'));
    const lostFile = path.join(dir, 'lost');
    const keptFile = path.join(dir, 'kept');
    const queuedFile = path.join(dir, 'queued');
    const lost = run('awaitAbort', { file: lostFile, ms: 60_000 }, { workflowName: 'lost' });
    const kept = run('awaitAbort', { file: keptFile, ms: 2_000 }, { workflowName: 'kept' });
    const queued = run('countedWait', { file: queuedFile, ms: 0 }, { workflowName: 'lost' });
    await waitFor(async () => (await linesOf(lostFile)).length === 1 && (await linesOf(keptFile)).length === 1, 'both to start');
    expect(pool.queued).toBe(1);
    // Still running when the stop comes, so its end below shows the stop passed it by.
    expect(await linesOf(keptFile)).toEqual(['started']);

    pool.abandon(new Set(['lost']));
    expect(pool.queued).toBe(0);
    expect(await queued).toBe(ABANDONED);
    expect(await lost).toBe(ABANDONED);
    expect(await linesOf(lostFile)).toEqual(['started', 'NameTakenOverError DURAFLOW_NAME_TAKEN_OVER']);
    // The other name's attempt ran on, to its end, and was reported.
    expect(await kept).toBe('ended');
    expect(await linesOf(keptFile)).toEqual(['started', 'none none']);
    // The threads are free again; the queued attempt never ran.
    expect(await run('threadOf', undefined, { workflowName: 'lost' })).toEqual(expect.any(Number));
    expect(await linesOf(queuedFile)).toEqual([]);
  });

  it('stops an attempt running alone, and one waiting for a single-attempt thread', async () => {
    const { pool, run } = await openPool();
    close = () => pool.close();
    dir = await mkdtemp(path.join(tmpdir(), 'duraflow-abandon-'));
    const files = Array.from({ length: 9 }, (_, i) => path.join(dir!, `alone-${i}`));
    // Two batch threads: eight single-attempt slots, so the ninth waits for one.
    const attempts = files.map((file) => run('awaitAbort', { file, ms: 60_000 }, { isolate: true, workflowName: 'lost' }));
    await waitFor(async () => (await Promise.all(files.slice(0, 8).map(linesOf))).every((lines) => lines.length === 1), 'eight to start');
    pool.abandon(new Set(['lost']));
    expect(await Promise.all(attempts)).toEqual(files.map(() => ABANDONED));
    for (const file of files.slice(0, 8)) expect(await linesOf(file)).toEqual(['started', 'NameTakenOverError DURAFLOW_NAME_TAKEN_OVER']);
    expect(await linesOf(files[8]!)).toEqual([]);
  });

  it('stops an attempt sent to a thread that starts after the stop was sent', async () => {
    // Single-attempt threads start on demand: this attempt's thread is not there yet.
    const { pool, run } = await openPool();
    close = () => pool.close();
    dir = await mkdtemp(path.join(tmpdir(), 'duraflow-abandon-'));
    const file = path.join(dir, 'late');
    const attempt = run('awaitAbort', { file, ms: 60_000 }, { isolate: true, workflowName: 'lost' });
    pool.abandon(new Set(['lost']));
    expect(await attempt).toBe(ABANDONED);
    // It did not run, or ran and saw its signal abort: not to its end.
    expect([[], ['started', 'NameTakenOverError DURAFLOW_NAME_TAKEN_OVER']]).toContainEqual(await linesOf(file));
  });

  it('starts an inline attempt after the code that submitted it, never on its stack', async () => {
    const order: string[] = [];
    const { pool, run } = await openPool(16, fixtureActivities, {
      syncInline: (() => {
        order.push('activity');
        return 'done';
      }) as ActivityFunction,
    });
    close = () => pool.close();
    const attempt = run('syncInline');
    order.push('after submit');
    expect(await attempt).toBe('done');
    expect(order).toEqual(['after submit', 'activity']);
  });

  it('aborts the signal of an inline attempt of the name, and reports it with no outcome', async () => {
    const reasons: unknown[] = [];
    const { pool, run } = await openPool(16, fixtureActivities, {
      inlineAwait: (async (_input: never, ctx: ActivityContext) => {
        reasons.push(await new Promise((resolve) => ctx.signal.addEventListener('abort', () => resolve(ctx.signal.reason))));
        return 'ended';
      }) as ActivityFunction,
    });
    close = () => pool.close();
    const attempt = run('inlineAwait', undefined, { workflowName: 'lost' });
    pool.abandon(new Set(['other']));
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(reasons).toEqual([]);
    pool.abandon(new Set(['lost']));
    expect(await attempt).toBe(ABANDONED);
    expect(reasons).toEqual([expect.objectContaining({ name: 'NameTakenOverError', workflowName: 'lost' })]);
  });
});
