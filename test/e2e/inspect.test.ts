import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import type { WorkflowContext } from 'duraflow';

import { backends, type TestSchema } from '../helpers/database.js';
import { openClient, startEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

/** Sleeps long, and meanwhile waits for an event with a shorter timeout: two timers, the later one first. */
async function twoTimers(ctx: WorkflowContext): Promise<void> {
  const sleep = ctx.sleep(100_000);
  const wait = ctx.waitForEvent('never', { timeoutMs: 50_000 });
  wait.catch(() => undefined);
  await sleep;
}

describe.each(backends)('inspect on $name', (backend) => {
  let db: TestSchema;
  beforeEach(async () => {
    db = await backend.schema();
  });
  afterEach(async () => {
    await db.drop();
  });

  it('lists the timers next due first, the same from the engine running the workflow and from a client', async () => {
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
});
