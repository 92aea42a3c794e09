import { describe, expect, it } from 'vitest';

import { ErrorCode, type WorkflowContext, WorkflowFailedError } from 'duraflow';

import { backends, useSchema } from '../helpers/database.js';
import { fixtureActivities, openClient, startEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

/** Sleeps long, and meanwhile waits for an event with a shorter timeout: two timers, the later one first. */
async function twoTimers(ctx: WorkflowContext): Promise<void> {
  const sleep = ctx.sleep(100_000);
  const wait = ctx.waitForEvent('never', { timeoutMs: 50_000 });
  wait.catch(() => undefined);
  await sleep;
}

/** Waits for 'open', then takes one event of 'go': those sent before 'open' are handed to it and kept. */
async function openThenTakeOne(ctx: WorkflowContext): Promise<unknown> {
  await ctx.waitForEvent('open');
  return ctx.waitForEvent('go');
}

type Fixtures = typeof import('../fixtures/activities.js');

/** Lets an activity that fails for good end the workflow: its ActivityFailure is the workflow's error. */
async function uncaught(ctx: WorkflowContext): Promise<void> {
  await ctx.activities<Fixtures>({ retry: { maxAttempts: 2, initialIntervalMs: 1 } }).alwaysFails();
}

describe.each(backends)('inspect on $name', (backend) => {
  const schema = useSchema(backend);

  it('lists the timers next due first, the same from the engine running the workflow and from a client', async () => {
    const db = schema();
    const engine = await startEngine(db, { workflows: { twoTimers } });
    const client = await openClient(db);
    try {
      await engine.startWorkflow(twoTimers, undefined, { workflowId: 'timers' });
      const cold = await waitFor(async () => {
        const state = await client.inspect('timers');
        return state.waitingOn.timers.length === 2 && state;
      }, 'both timers stored');
      const hot = await engine.inspect('timers');
      expect(cold.waitingOn.timers.map((t) => t.commandId)).toEqual([2, 1]);
      expect(hot.waitingOn).toEqual(cold.waitingOn);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('lists in queuedEvents the events not handed to the workflow yet, not those it was handed and keeps', async () => {
    const db = schema();
    const engine = await startEngine(db, { workflows: { openThenTakeOne } });
    const client = await openClient(db);
    try {
      await engine.startWorkflow(openThenTakeOne, undefined, { workflowId: 'kept' });
      await engine.sendEvent('kept', 'go', 'first');
      await engine.sendEvent('kept', 'go', 'second');
      const handed = await waitFor(async () => {
        const state = await client.inspect('kept');
        return state.history.filter((e) => e.type === 'EventReceived').length === 2 && state;
      }, 'both events handed to the workflow');
      expect(handed.status).toBe('running');
      expect(handed.queuedEvents).toEqual([]);
      expect(handed.history.filter((e) => e.type === 'EventReceived')).toEqual([
        expect.not.objectContaining({ resolves: expect.anything() }),
        expect.not.objectContaining({ resolves: expect.anything() }),
      ]);
      await engine.sendEvent('kept', 'open');
      expect(await engine.result('kept', { timeoutMs: 10_000 })).toBe('first');
      // The second was kept and never taken: the history has it, the inbox does not.
      expect((await client.inspect('kept')).queuedEvents).toEqual([]);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('keeps the activity name and attempts of an ActivityFailure that failed the workflow, for result and inspect', async () => {
    const db = schema();
    const engine = await startEngine(db, { workflows: { uncaught }, activities: fixtureActivities });
    const client = await openClient(db);
    try {
      await engine.startWorkflow(uncaught, undefined, { workflowId: 'uncaught' });
      const failed = await client.result('uncaught', { timeoutMs: 10_000 }).catch((error: unknown) => error);
      expect(failed).toBeInstanceOf(WorkflowFailedError);
      const cause = (failed as WorkflowFailedError).cause as { code?: string; details?: unknown };
      expect(cause.code).toBe(ErrorCode.ActivityFailure);
      expect(cause.details).toEqual({ activityName: 'alwaysFails', attempts: 2 });
      expect((await client.inspect('uncaught')).error?.details).toEqual({ activityName: 'alwaysFails', attempts: 2 });
    } finally {
      await client.close();
      await engine.close();
    }
  });
});
