import { describe, expect, it, vi } from 'vitest';

import { type ActivityContext, type Engine, EngineClosedError, MetricName, type WorkflowContext, type WorkflowFunction } from 'duraflow';

import { backends, useSchema } from '../helpers/database.js';
import { fixtureActivities, openClient, readMetric, startEngine } from '../helpers/engines.js';
import { heldActivity } from '../helpers/held-activity.js';
import { waitFor } from '../helpers/wait-for.js';

type Fixtures = typeof import('../fixtures/activities.js');

async function chain(ctx: WorkflowContext, input: { n: number }): Promise<number> {
  const { double } = ctx.activities<Fixtures>();
  let value = input.n;
  for (let i = 0; i < 3; i++) value = await double(value);
  return value;
}

/** Awaits an activity that ends only when its engine closes. */
async function stuck(ctx: WorkflowContext): Promise<void> {
  const { hang } = ctx.activities<Fixtures>();
  await hang(undefined);
}

async function waitsForGo(ctx: WorkflowContext): Promise<unknown> {
  return ctx.waitForEvent('go');
}

async function quick(ctx: WorkflowContext): Promise<number> {
  const { double } = ctx.activities<Fixtures>();
  return double(21);
}

/** Three sequential steps of an inline activity each engine of a test defines for itself. */
async function recovered(ctx: WorkflowContext, input: { n: number }): Promise<number> {
  const { step } = ctx.activities<{ step(n: number): Promise<number> }>();
  let value = input.n;
  for (let i = 0; i < 3; i++) value = await step(value);
  return value;
}

describe.each(backends)('actor cache on $name', (backend) => {
  const db = useSchema(backend);

  /** An engine whose one-actor cache holds 'stuck', awaiting an activity that never ends. */
  async function heldByStuck(workflows: Record<string, WorkflowFunction>, pollIntervalMs: number): Promise<Engine> {
    const engine = await startEngine(db(), {
      workflows: { stuck, ...workflows },
      activities: fixtureActivities,
      maxCachedWorkflows: 1,
      pollIntervalMs,
    });
    await engine.startWorkflow(stuck, undefined, { workflowId: 'stuck' });
    await waitFor(async () => (await engine.inspect('stuck')).waitingOn.activities.length > 0, 'the hanging activity');
    return engine;
  }

  it('runs more workflows than it caches in turns, replaying none of them', async () => {
    const engine = await startEngine(db(), { workflows: { chain }, activities: fixtureActivities, maxCachedWorkflows: 4 });
    try {
      const handles = await Promise.all(
        Array.from({ length: 40 }, (_, n) => engine.startWorkflow(chain, { n }, { workflowId: `c-${n}` })),
      );
      // Every start is stored; all but the first few wait for a workflow in memory to finish.
      expect(await readMetric(engine, MetricName.WorkflowsWaitingForRoom)).toBeGreaterThan(0);
      expect(await readMetric(engine, MetricName.ActorsInMemory)).toBeLessThanOrEqual(4);
      expect(await Promise.all(handles.map((h) => h.result()))).toEqual(Array.from({ length: 40 }, (_, n) => n * 8));
      // Evicting actors that await an activity would have made each replay at its next step.
      expect(await readMetric(engine, MetricName.ActorRehydrations)).toBe(0);
      expect(await readMetric(engine, MetricName.WorkflowsWaitingForRoom)).toBe(0);
    } finally {
      await engine.close();
    }
  });

  it('gives a waiting start the place of a workflow that has had its turn in memory', async () => {
    // Only the monotonic clock is faked: the turn (30 s) passes without the test waiting for it.
    vi.useFakeTimers({ toFake: ['performance'] });
    const engine = await heldByStuck({ quick }, 100);
    try {
      const first = await engine.startWorkflow(quick, undefined, { workflowId: 'quick-1' });
      // Well within the stuck workflow's turn, a start looks for room (as every stored start
      // does) and finds none: both wait.
      vi.advanceTimersByTime(20_000);
      const second = await engine.startWorkflow(quick, undefined, { workflowId: 'quick-2' });
      expect(await readMetric(engine, MetricName.WorkflowsWaitingForRoom)).toBe(2);
      expect(await engine.inspect('quick-1')).toMatchObject({
        status: 'pending',
        pendingReason: expect.stringMatching(/waiting for room in the actor cache/),
      });
      // Past it, the next poll evicts the stuck workflow for them.
      vi.advanceTimersByTime(20_000);
      expect(await Promise.all([first.result(), second.result()])).toEqual([42, 42]);
      expect(await readMetric(engine, MetricName.ActorEvictions)).toBe(1);
    } finally {
      await engine.close();
      vi.useRealTimers();
    }
  });

  /** 40 `recovered` workflows whose first attempts were running when their engine closed. */
  async function interrupted(): Promise<void> {
    let running = 0;
    const first = await startEngine(db(), {
      workflows: { recovered },
      // Each workflow's first attempt runs until the engine closes.
      inlineActivities: {
        step: (_n: number, ctx: ActivityContext) =>
          new Promise((_, reject) => {
            running++;
            ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error));
          }),
      },
    });
    try {
      await Promise.all(Array.from({ length: 40 }, (_, n) => first.startWorkflow(recovered, { n }, { workflowId: `r-${n}` })));
      await waitFor(() => running === 40, 'every first attempt to run');
    } finally {
      await first.close();
    }
  }

  it('takes in the activity results of a recovery in turns, replaying each workflow once', async () => {
    await interrupted();
    // The restart dispatches the 40 attempts again, and their results come back for workflows
    // none of which is in memory, into a cache of 4.
    const second = await startEngine(db(), {
      workflows: { recovered },
      inlineActivities: { step: async (n: number) => n * 2 },
      maxCachedWorkflows: 4,
    });
    try {
      const results = await Promise.all(Array.from({ length: 40 }, (_, n) => second.result(`r-${n}`)));
      expect(results).toEqual(Array.from({ length: 40 }, (_, n) => n * 8));
      // Evicting actors that await an activity to take in the others' results would have made
      // them replay again at their next step.
      expect(await readMetric(second, MetricName.ActorRehydrations)).toBe(40);
    } finally {
      await second.close();
    }
  });

  it('commits the activity results that wait for room when it closes', async () => {
    await interrupted();
    let runs = 0;
    const second = await startEngine(db(), {
      workflows: { recovered },
      inlineActivities: {
        step: async (n: number) => {
          runs++;
          return n * 2;
        },
      },
      maxCachedWorkflows: 4,
    });
    try {
      // The 40 first attempts, run again; most of their results wait for room.
      await waitFor(() => runs >= 40, 'the recovered attempts to run');
      expect(await readMetric(second, MetricName.WorkflowsWaitingForRoom)).toBeGreaterThan(0);
    } finally {
      await second.close();
    }
    // Each of them was taken in and committed on the way out, not dropped to run a third time.
    const client = await openClient(db());
    try {
      for (let n = 0; n < 40; n++) {
        const { history } = await client.inspect(`r-${n}`);
        expect(history.filter((e) => e.type === 'ActivityCompleted').length, `r-${n}`).toBeGreaterThanOrEqual(1);
      }
    } finally {
      await client.close();
    }
  });

  it('starts a waiting workflow once, with its events, when an event brings it into memory first', async () => {
    // Polls, which find the waiting rows and start those in memory, come often.
    const engine = await heldByStuck({ quick, waitsForGo }, 100);
    try {
      const later = await engine.startWorkflow(quick, undefined, { workflowId: 'later' });
      const waiting = await engine.startWorkflow(waitsForGo, undefined, { workflowId: 'waiting' });
      expect(await readMetric(engine, MetricName.WorkflowsWaitingForRoom)).toBe(2);
      // An event is taken in at once, and the start that waited for the same workflow with it.
      await engine.sendEvent('waiting', 'go', 'went');
      expect(await waiting.result()).toBe('went');
      expect(await later.result()).toBe(42);
      await waitFor(async () => (await readMetric(engine, MetricName.WorkflowsWaitingForRoom)) === 0, 'nothing to wait');
      // One more workflow through the WAL: whatever was admitted before it has been flushed.
      expect(await (await engine.startWorkflow(quick, undefined, { workflowId: 'after' })).result()).toBe(42);
      // Started twice, it would have written its first history rows again: a failed flush.
      expect(await readMetric(engine, MetricName.WalFlushErrors)).toBe(0);
      expect((await engine.inspect('waiting')).history.filter((e) => e.type === 'WorkflowStarted')).toHaveLength(1);
    } finally {
      await engine.close();
    }
  });

  it('admits the next waiting start after a late result brings a finished workflow back into memory', async () => {
    const loser = heldActivity();
    const blocker = heldActivity();
    type Inline = { quick(n: number): Promise<number>; loser(): Promise<string>; blocker(): Promise<string> };
    // Ends with the quick activity; the loser's result comes after the end.
    async function racer(ctx: WorkflowContext): Promise<unknown> {
      const { quick, loser } = ctx.activities<Inline>();
      return Promise.race([quick(21), loser()]);
    }
    async function blocks(ctx: WorkflowContext): Promise<unknown> {
      return ctx.activities<Inline>().blocker();
    }
    async function once(ctx: WorkflowContext): Promise<unknown> {
      return ctx.activities<Inline>().quick(1);
    }
    const engine = await startEngine(db(), {
      workflows: { racer, blocks, once },
      inlineActivities: { quick: async (n: number) => n * 2, loser: loser.activity, blocker: blocker.activity },
      maxCachedWorkflows: 1,
      // No poll for ten minutes: only the actors' own progress admits what waits.
      pollIntervalMs: 600_000,
    });
    try {
      const racing = await engine.startWorkflow(racer, undefined, { workflowId: 'racer' });
      const blocking = await engine.startWorkflow(blocks, undefined, { workflowId: 'blocks' });
      const first = await engine.startWorkflow(once, undefined, { workflowId: 'first' });
      expect(await racing.result()).toBe(42);
      await waitFor(async () => (await engine.inspect('blocks')).waitingOn.activities.length > 0, 'blocks to run');
      // The finished racer's late result waits for room behind the first start.
      loser.release();
      await waitFor(async () => (await readMetric(engine, MetricName.WorkflowsWaitingForRoom)) === 2, 'the late result to wait');
      const second = await engine.startWorkflow(once, undefined, { workflowId: 'second' });
      blocker.release();
      expect(await blocking.result()).toBe('done');
      expect(await first.result()).toBe(2);
      // The racer's actor, loaded for its late result, writes nothing and must still give way.
      expect(await second.result({ timeoutMs: 5_000 })).toBe(2);
    } finally {
      await engine.close();
    }
  });

  it('keeps a start that waits for room across a restart', async () => {
    const first = await heldByStuck({ quick }, 500);
    let awaited: Promise<unknown> | undefined;
    try {
      const handle = await first.startWorkflow(quick, undefined, { workflowId: 'quick' });
      expect(await readMetric(first, MetricName.WorkflowsWaitingForRoom)).toBe(1);
      // Waited on here (it will run here): the close answers the caller.
      awaited = handle.result();
      awaited.catch(() => undefined);
    } finally {
      await first.close();
    }
    await expect(awaited).rejects.toBeInstanceOf(EngineClosedError);
    const second = await startEngine(db(), { workflows: { stuck, quick }, activities: fixtureActivities });
    try {
      expect(await second.result('quick')).toBe(42);
    } finally {
      await second.close();
    }
  });
});
