import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import type { Engine, WorkflowContext } from 'duraflow';

import { subscription } from '../../examples/subscription/workflow.js';
import { sum2rn } from '../../examples/sum2rn/workflow.js';
import { backends, type TestSchema } from '../helpers/database.js';
import { fixtureActivities, openClient, startEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

type Fixtures = typeof import('../fixtures/activities.js');

async function fanOut(ctx: WorkflowContext, input: { n: number }): Promise<number> {
  const { double } = ctx.activities<Fixtures>();
  const results = await Promise.all(Array.from({ length: input.n }, (_, i) => double(i)));
  return results.reduce((a, b) => a + b, 0);
}

describe.each(backends)('basics on $name', (backend) => {
  let db: TestSchema;
  beforeEach(async () => {
    db = await backend.schema();
  });
  afterEach(async () => {
    await db.drop();
  });

  it('runs sum2rn: two activities in parallel, summed', async () => {
    const engine = await startEngine(db, {
      workflows: { sum2rn },
      activities: new URL('../../dist/examples/sum2rn/activities.js', import.meta.url),
    });
    try {
      const handle = await engine.startWorkflow(sum2rn, { seed: 42 });
      const out = await handle.result();
      expect(out.sum).toBe(out.a + out.b);
      expect(out.a).not.toBe(out.b);
      const state = await engine.inspect(handle.workflowId);
      expect(state.status).toBe('completed');
      expect(state.vars).toEqual({ a: out.a, b: out.b });
      expect(state.history.map((e) => e.type)).toEqual([
        'WorkflowStarted',
        'ActivityScheduled',
        'ActivityScheduled',
        'ActivityCompleted',
        'ActivityCompleted',
        'WorkflowCompleted',
      ]);
      expect(state.history.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6]);
      // Each call's activity options are in its event, as stored.
      expect(state.history.flatMap((e) => (e.type === 'ActivityScheduled' ? [e.options] : []))).toEqual([
        { retry: { maxAttempts: 3 } },
        { retry: { maxAttempts: 3 } },
      ]);
      // An ended workflow's result is there whatever the timeout, from any process.
      const client = await openClient(db);
      try {
        for (let i = 0; i < 5; i++) expect(await client.result(handle.workflowId, { timeoutMs: 0 })).toEqual(out);
      } finally {
        await client.close();
      }
    } finally {
      await engine.close();
    }
  });

  it('fans out 100 parallel activities and sums them', async () => {
    const engine = await startEngine(db, { workflows: { fanOut }, activities: fixtureActivities });
    try {
      const handle = await engine.startWorkflow(fanOut, { n: 100 });
      expect(await handle.result()).toBe(2 * ((99 * 100) / 2));
      const state = await engine.inspect(handle.workflowId);
      // All 100 were scheduled in the first activation, before any result came back.
      const scheduled = state.history.filter((e) => e.type === 'ActivityScheduled');
      expect(scheduled).toHaveLength(100);
      expect(new Set(scheduled.map((e) => e.activation))).toEqual(new Set([1]));
    } finally {
      await engine.close();
    }
  });

  it('runs the subscription example with short cycles', async () => {
    const engine = await startEngine(db, {
      workflows: { subscription },
      activities: new URL('../../dist/examples/subscription/activities.js', import.meta.url),
    });
    try {
      const input = { totalAmount: 1000, cycles: 4, cycleDurationMs: 40, successRate: 0.5 };
      const handle = await engine.startWorkflow(subscription, input, { workflowId: 'sub-1', version: '7' });
      const out = await handle.result();
      expect(out.paid + out.overdue).toBe(1000);
      const state = await engine.inspect('sub-1');
      expect(state.version).toBe('7');
      expect(state.vars.currentCycle).toBe(4);
      expect(state.vars.paid).toBe(out.paid);
      expect(state.vars.overdue).toBe(out.overdue);
      for (let cycle = 0; cycle < 4; cycle++) {
        expect(state.vars).toHaveProperty(`cycle_${cycle}_completed_at`);
        const paidVar = state.vars[`cycle_${cycle}_paid_amount`];
        const errVar = state.vars[`cycle_${cycle}_err`];
        expect(paidVar === undefined).not.toBe(errVar === undefined);
      }
      const fired = state.history.filter((e) => e.type === 'TimerFired');
      expect(fired).toHaveLength(4);
      // Cycle n is paid no earlier than n cycle durations after the start.
      const started = state.startedAt!.getTime();
      const completedAt = [0, 1, 2, 3].map((c) => Date.parse(state.vars[`cycle_${c}_completed_at`] as string));
      completedAt.forEach((at, c) => expect(at).toBeGreaterThanOrEqual(started + c * 40));
    } finally {
      await engine.close();
    }
  });

  it('reports a workflow whose code throws as failed, with the error', async () => {
    async function broken(_ctx: WorkflowContext, input: { message: string }): Promise<never> {
      throw new RangeError(input.message);
    }
    const engine = await startEngine(db, { workflows: { broken } });
    try {
      const handle = await engine.startWorkflow(broken, { message: 'no such plan' });
      const error = await handle.result().catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'DURAFLOW_WORKFLOW_FAILED', name: 'WorkflowFailedError' });
      expect((error as Error).cause).toMatchObject({ name: 'RangeError', message: 'no such plan' });
      const state = await engine.inspect(handle.workflowId);
      expect(state.status).toBe('failed');
      expect(state.error).toMatchObject({ name: 'RangeError', message: 'no such plan' });
    } finally {
      await engine.close();
    }
  });

  it('gives workflow code deterministic time, randomness and info, the same on replay and in another database', async () => {
    /** What each run of the code before the wait saw (a test-only side channel). */
    const runs: { workflowId: string; isReplaying: boolean; before: number; random: number[] }[] = [];
    async function facts(ctx: WorkflowContext): Promise<unknown> {
      const before = ctx.now().getTime();
      const random = [ctx.random(), ctx.random()];
      runs.push({ workflowId: ctx.info.workflowId, isReplaying: ctx.info.isReplaying, before, random });
      await ctx.sleep(10);
      const after = ctx.now().getTime();
      await ctx.waitForEvent('go');
      return { before, after, random: [...random, ctx.random()], info: ctx.info };
    }
    type Facts = {
      before: number;
      after: number;
      random: number[];
      info: { workflowId: string; workflowName: string; version: string; isReplaying: boolean };
    };
    const isWaiting = (engine: Engine, id: string) => async () =>
      (await engine.inspect(id)).history.some((e) => e.type === 'EventWaitStarted');
    // One actor in memory: starting a second workflow evicts the first, which then replays.
    const engine = await startEngine(db, { workflows: { facts }, maxCachedWorkflows: 1 });
    let a: Facts;
    let other: Facts;
    try {
      const handle = await engine.startWorkflow(facts, undefined, { workflowId: 'same-seed' });
      await waitFor(isWaiting(engine, 'same-seed'), 'same-seed to wait');
      const otherHandle = await engine.startWorkflow(facts, undefined, { workflowId: 'other-seed' });
      await waitFor(isWaiting(engine, 'other-seed'), 'other-seed to wait');
      await engine.sendEvent('same-seed', 'go');
      a = (await handle.result()) as Facts;
      await engine.sendEvent('other-seed', 'go');
      other = (await otherHandle.result()) as Facts;
      expect(a.after - a.before).toBeGreaterThanOrEqual(10);
      expect(a.info).toMatchObject({ workflowId: 'same-seed', workflowName: 'facts', version: '1', isReplaying: false });
      const state = await engine.inspect('same-seed');
      expect(state.history[0]!.at.getTime()).toBe(a.before);
    } finally {
      await engine.close();
    }
    expect(new Set(a.random).size).toBe(3);
    // The replay after the eviction drew the same numbers at the same time as the first run.
    const sameSeedRuns = runs.filter((r) => r.workflowId === 'same-seed');
    expect(sameSeedRuns).toEqual([
      { workflowId: 'same-seed', isReplaying: false, before: a.before, random: a.random.slice(0, 2) },
      { workflowId: 'same-seed', isReplaying: true, before: a.before, random: a.random.slice(0, 2) },
    ]);
    // Seeded by the workflow id: another id draws other numbers...
    expect(other.random).not.toEqual(a.random);
    // ...and the same id in another database (another engine, no shared state) the same ones.
    const elsewhere = await backend.schema();
    try {
      const engine2 = await startEngine(elsewhere, { workflows: { facts } });
      try {
        const handle = await engine2.startWorkflow(facts, undefined, { workflowId: 'same-seed' });
        await waitFor(isWaiting(engine2, 'same-seed'), 'same-seed to wait in the other database');
        await engine2.sendEvent('same-seed', 'go');
        const b = (await handle.result()) as Facts;
        expect(b.random).toEqual(a.random);
      } finally {
        await engine2.close();
      }
    } finally {
      await elsewhere.drop();
    }
  });
});
