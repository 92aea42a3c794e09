import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { ActivityFailure, MetricName, type WorkflowContext } from 'duraflow';

import { backends, type TestSchema } from '../helpers/database.js';
import { fixtureActivities, readMetric, startEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

type Fixtures = typeof import('../fixtures/activities.js');

async function flakyTwice(ctx: WorkflowContext): Promise<number> {
  const { flaky } = ctx.activities<Fixtures>({ retry: { initialIntervalMs: 10, maxAttempts: 5 } });
  return flaky({ succeedOn: 3 });
}

async function retryLaterOnce(ctx: WorkflowContext, input: { delayMs: number }): Promise<{ attempt: number; at: number }> {
  const { retryLater } = ctx.activities<Fixtures>({ retry: { initialIntervalMs: 1 } });
  return retryLater(input);
}

async function asksRetry(ctx: WorkflowContext, input: { after?: unknown; at?: unknown }): Promise<string> {
  const { askRetry } = ctx.activities<Fixtures>();
  return askRetry(input);
}

/** Leaves an activity waiting for its retry behind when the event ends it. */
async function abandonsRetry(ctx: WorkflowContext): Promise<string> {
  const { retryLater } = ctx.activities<Fixtures>({ retry: { initialIntervalMs: 1 } });
  void retryLater({ delayMs: 600_000 });
  await ctx.waitForEvent('stop');
  return 'stopped';
}

/** Starts a timer and ends in the same step. */
async function abandonsTimer(ctx: WorkflowContext): Promise<string> {
  void ctx.sleep(600_000);
  return 'done';
}

/** Returns what the caught ActivityFailure said, so the test can check it. */
async function catches(ctx: WorkflowContext, input: { which: 'decline' | 'exhaust' | 'byName' }): Promise<unknown> {
  const stubs = ctx.activities<Fixtures>({
    retry: { initialIntervalMs: 5, maxAttempts: 3, ...(input.which === 'byName' ? { nonRetryable: ['BoomError'] } : {}) },
  });
  try {
    if (input.which === 'decline') await stubs.decline({ reason: 'card declined' });
    else await stubs.alwaysFails();
    return 'no error';
  } catch (error) {
    if (!(error instanceof ActivityFailure)) return `unexpected ${String(error)}`;
    const cause = error.cause as Error;
    return { activityName: error.activityName, attempts: error.attempts, cause: { name: cause.name, message: cause.message, hasStack: typeof cause.stack === 'string' } };
  }
}

describe.each(backends)('activity retries on $name', (backend) => {
  let db: TestSchema;
  beforeEach(async () => {
    db = await backend.schema();
  });
  afterEach(async () => {
    await db.drop();
  });

  it('retries an activity that fails twice; the third attempt succeeds', async () => {
    const engine = await startEngine(db, { workflows: { flakyTwice }, activities: fixtureActivities });
    try {
      const handle = await engine.startWorkflow(flakyTwice, undefined);
      expect(await handle.result()).toBe(3);
      const completed = (await engine.inspect(handle.workflowId)).history.find((e) => e.type === 'ActivityCompleted');
      expect(completed).toMatchObject({ attempts: 3, result: 3 });
    } finally {
      await engine.close();
    }
  });

  it("honours the activity's own retryAfter over the backoff", async () => {
    const engine = await startEngine(db, { workflows: { retryLaterOnce }, activities: fixtureActivities });
    try {
      const handle = await engine.startWorkflow(retryLaterOnce, { delayMs: 300 });
      const out = await handle.result();
      expect(out.attempt).toBe(2);
      const scheduled = (await engine.inspect(handle.workflowId)).history.find((e) => e.type === 'ActivityScheduled')!;
      expect(out.at - scheduled.at.getTime()).toBeGreaterThanOrEqual(300);
    } finally {
      await engine.close();
    }
  });

  it('refuses a retry time that is not a time or beyond a Date, naming it', async () => {
    const engine = await startEngine(db, { workflows: { asksRetry }, activities: fixtureActivities });
    try {
      const answers = await Promise.all(
        [
          { after: null },
          { after: -5 },
          { after: 'soon' },
          { after: 1e300 },
          { at: null },
          { at: new Date(Number.NaN) },
          { at: 9e15 },
          { after: 10 },
        ].map(
          async (input) => (await engine.startWorkflow(asksRetry, input)).result(),
        ),
      );
      expect(answers).toEqual([
        'InvalidArgumentError: retryAfter delay must be a finite number of milliseconds >= 0, got null',
        'InvalidArgumentError: retryAfter delay must be a finite number of milliseconds >= 0, got -5',
        'InvalidArgumentError: retryAfter delay must be a finite number of milliseconds >= 0, got soon',
        'InvalidArgumentError: retryAfter delay 1e+300 ends beyond the range of a Date',
        'InvalidArgumentError: retryAt time must be a valid Date or finite epoch milliseconds, got null',
        // JSON carries an invalid Date as null.
        'InvalidArgumentError: retryAt time must be a valid Date or finite epoch milliseconds, got null',
        'InvalidArgumentError: retryAt time 9000000000000000 is outside the range of a Date',
        'accepted',
      ]);
    } finally {
      await engine.close();
    }
  });

  it('cancels what a finished workflow left waiting: a retry armed earlier, a timer started in its last step', async () => {
    const engine = await startEngine(db, { workflows: { abandonsRetry, abandonsTimer }, activities: fixtureActivities });
    const timersArmed = (): Promise<number> => readMetric(engine, MetricName.TimersArmed);
    try {
      const retrying = await engine.startWorkflow(abandonsRetry, undefined);
      await waitFor(
        async () => (await db.query(`SELECT 1 FROM "${db.schema}".activity_tasks WHERE workflow_id = $1`, [retrying.workflowId])).length > 0,
        'the retry to be stored',
      );
      // Armed by the commit's callback, which may run just after the row became visible.
      await waitFor(async () => (await timersArmed()) === 1, 'the retry to be armed');
      expect(await timersArmed()).toBe(1);
      await engine.sendEvent(retrying.workflowId, 'stop');
      expect(await retrying.result()).toBe('stopped');
      expect(await (await engine.startWorkflow(abandonsTimer, undefined)).result()).toBe('done');
      // Nothing is left to fire: no rows a restart would re-arm, nothing armed in memory.
      expect(await db.query(`SELECT workflow_id FROM "${db.schema}".activity_tasks`)).toEqual([]);
      expect(await db.query(`SELECT workflow_id FROM "${db.schema}".timers`)).toEqual([]);
      expect(await timersArmed()).toBe(0);
    } finally {
      await engine.close();
    }
  });

  it('fails at once on NonRetryableError', async () => {
    const engine = await startEngine(db, { workflows: { catches }, activities: fixtureActivities });
    try {
      const out = await (await engine.startWorkflow(catches, { which: 'decline' })).result();
      expect(out).toEqual({ activityName: 'decline', attempts: 1, cause: { name: 'NonRetryableError', message: 'card declined', hasStack: true } });
    } finally {
      await engine.close();
    }
  });

  it('gives up after maxAttempts with ActivityFailure carrying the last error', async () => {
    const engine = await startEngine(db, { workflows: { catches }, activities: fixtureActivities });
    try {
      const out = await (await engine.startWorkflow(catches, { which: 'exhaust' })).result();
      expect(out).toEqual({ activityName: 'alwaysFails', attempts: 3, cause: { name: 'BoomError', message: 'boom', hasStack: true } });
      const byName = await (await engine.startWorkflow(catches, { which: 'byName' })).result();
      expect(byName).toMatchObject({ attempts: 1, cause: { name: 'BoomError' } });
    } finally {
      await engine.close();
    }
  });
});
