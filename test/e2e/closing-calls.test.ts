import { describe, expect, it } from 'vitest';

import { createClient, createEngine, ErrorCode, type WorkflowContext } from 'duraflow';

import { backends, isWaitingForLock, lockTable, serverBackends, useSchema } from '../helpers/database.js';
import { quietLogger, startEngine } from '../helpers/engines.js';
import { heldActivity } from '../helpers/held-activity.js';
import { waitFor } from '../helpers/wait-for.js';

async function idle(ctx: WorkflowContext): Promise<unknown> {
  return ctx.waitForEvent('never');
}

/** Whether every call has settled before the event loop turns once more (no timer can fire first). */
async function settlesAtOnce(calls: Promise<unknown>[]): Promise<boolean> {
  return Promise.race([
    Promise.allSettled(calls).then(() => true),
    new Promise<boolean>((resolve) => setImmediate(() => resolve(false))),
  ]);
}

const codeOf = (call: Promise<unknown>): Promise<string | undefined> =>
  call.then(
    () => 'resolved',
    (error: { code?: string }) => error.code,
  );

describe.each(backends)('calls under way when a client or an engine closes, on $name', (backend) => {
  const db = useSchema(backend);

  it('ends calls waiting for a connection with EngineClosedError by the time close() resolves', async () => {
    const options = { database: db().database, schema: db().schema, logger: quietLogger, maxConnections: 2 };
    const client = await createClient(options);
    await client.startWorkflow('unregistered', {}, { workflowId: 'w-1' });
    // More calls than connections: most wait for one in the pool when close() comes.
    const calls = [
      ...Array.from({ length: 12 }, () => client.result('w-1')),
      ...Array.from({ length: 4 }, () => client.inspect('w-1')),
    ];
    const codes = Promise.all(calls.map(codeOf));
    await client.close();
    expect(await settlesAtOnce(calls)).toBe(true);
    expect(new Set((await codes).slice(0, 12))).toEqual(new Set([ErrorCode.EngineClosed]));

    const engine = await createEngine({ ...options, workflows: { idle }, activityThreads: 1 });
    const engineCalls = Array.from({ length: 12 }, () => engine.result('w-1'));
    const engineCodes = Promise.all(engineCalls.map(codeOf));
    await engine.close();
    expect(await settlesAtOnce(engineCalls)).toBe(true);
    expect(new Set(await engineCodes)).toEqual(new Set([ErrorCode.EngineClosed]));
  });
});

describe.each(serverBackends)('a step that commits while its engine closes, on $name', (backend) => {
  const db = useSchema(backend);

  it('answers the result() waiting for a workflow whose last step commits during close()', async () => {
    const hold = heldActivity();
    async function oneStep(ctx: WorkflowContext): Promise<unknown> {
      return ctx.activities<{ held(): Promise<string> }>().held();
    }
    const engine = await startEngine(db(), { workflows: { oneStep }, inlineActivities: { held: hold.activity } });
    let lock: Awaited<ReturnType<typeof lockTable>> | undefined;
    try {
      await engine.startWorkflow(oneStep, undefined, { workflowId: 'last-step' });
      await waitFor(async () => (await engine.inspect('last-step')).waitingOn.activities.length > 0, 'the activity to run');
      const result = engine.result('last-step');
      // The last step's flush waits on the lock until the engine is closing.
      lock = await lockTable(db(), 'history', 'EXCLUSIVE');
      hold.release();
      await waitFor(() => isWaitingForLock(db(), 'history'), 'the last step to wait for the lock');
      const closing = engine.close();
      await lock.release();
      await closing;
      expect(await result).toBe('done');
    } finally {
      await lock?.release();
      await engine.close();
    }
  });
});
