import { describe, expect, it } from 'vitest';

import { createClient, createEngine, ErrorCode, type WorkflowContext } from 'duraflow';

import { backends, useSchema } from '../helpers/database.js';
import { quietLogger } from '../helpers/engines.js';

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
