/**
 * Rejections inside workflow code that nothing awaits at the moment they happen: an async event
 * handler that throws, an activity that fails before the workflow gets to its `await`, a wait
 * that times out while the workflow awaits something else. Each must reach the workflow (fail it,
 * or be caught where it is awaited), never end the engine's process as an unhandled rejection.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { type WorkflowContext, WorkflowFailedError } from 'duraflow';

import { backends, type TestSchema } from '../helpers/database.js';
import { startEngine } from '../helpers/engines.js';
import { heldActivity } from '../helpers/held-activity.js';
import { waitFor } from '../helpers/wait-for.js';

interface Stubs {
  held(): Promise<string>;
  failsFast(): Promise<never>;
}

async function asyncHandler(ctx: WorkflowContext): Promise<string> {
  ctx.onEvent('note', async () => {
    await Promise.resolve();
    throw new Error('the handler gave up');
  });
  await ctx.waitForEvent('done');
  return 'not reached';
}

/** Two activities at once, awaited one after the other: the second fails while the first runs. */
async function awaitsInTurn(ctx: WorkflowContext): Promise<string> {
  const { held, failsFast } = ctx.activities<Stubs>({ retry: { maxAttempts: 1 } });
  const first = held();
  const second = failsFast();
  try {
    await first;
    await second;
    return 'no error';
  } catch (error) {
    return `caught ${(error as Error).name}`;
  }
}

/** A wait whose timeout passes while the workflow is still awaiting an activity. */
async function timesOutMeanwhile(ctx: WorkflowContext): Promise<string> {
  const approval = ctx.waitForEvent('approve', { timeoutMs: 50 });
  await ctx.activities<Stubs>().held();
  try {
    await approval;
    return 'approved';
  } catch (error) {
    return `caught ${(error as Error).name}`;
  }
}

describe.each(backends)('rejections in workflow code on $name', (backend) => {
  let db: TestSchema;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => {
    unhandled.push(reason);
  };
  beforeEach(async () => {
    db = await backend.schema();
    unhandled.length = 0;
    process.on('unhandledRejection', onUnhandled);
  });
  afterEach(async () => {
    process.off('unhandledRejection', onUnhandled);
    await db.drop();
  });

  it('fails the workflow whose async onEvent handler throws', async () => {
    const engine = await startEngine(db, { workflows: { asyncHandler } });
    try {
      const handle = await engine.startWorkflow(asyncHandler, undefined);
      await engine.sendEvent(handle.workflowId, 'note', 1);
      const error = await handle.result().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(WorkflowFailedError);
      expect((error as WorkflowFailedError).message).toMatch(/the handler gave up/);
      expect(unhandled).toEqual([]);
    } finally {
      await engine.close();
    }
  });

  it('hands an activity failure to the await that comes after it, live as on replay', async () => {
    const { activity: held, release } = heldActivity();
    const engine = await startEngine(db, {
      workflows: { awaitsInTurn },
      inlineActivities: {
        held,
        failsFast: async () => {
          throw new Error('fast failure');
        },
      },
    });
    try {
      const handle = await engine.startWorkflow(awaitsInTurn, undefined);
      await waitFor(
        async () => (await engine.inspect(handle.workflowId)).history.some((e) => e.type === 'ActivityFailed'),
        'the second activity to fail while the first runs',
      );
      release();
      expect(await handle.result()).toBe('caught ActivityFailure');
      expect(unhandled).toEqual([]);
    } finally {
      release();
      await engine.close();
    }
  });

  it('hands a wait timeout to the await that comes after it', async () => {
    const { activity: held, release } = heldActivity();
    const engine = await startEngine(db, { workflows: { timesOutMeanwhile }, inlineActivities: { held } });
    try {
      const handle = await engine.startWorkflow(timesOutMeanwhile, undefined);
      await waitFor(
        async () => (await engine.inspect(handle.workflowId)).history.some((e) => e.type === 'TimerFired'),
        'the wait to time out while the activity runs',
      );
      release();
      expect(await handle.result()).toBe('caught TimeoutError');
      expect(unhandled).toEqual([]);
    } finally {
      release();
      await engine.close();
    }
  });
});
