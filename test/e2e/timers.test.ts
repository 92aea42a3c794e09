import { describe, expect, it } from 'vitest';

import type { WorkflowContext } from 'duraflow';

import { backends, useSchema } from '../helpers/database.js';
import { startEngine } from '../helpers/engines.js';

/** Starts `count` sleeps of the same length in one step (so all due at the same ms); returns the order they ended in. */
async function alikeSleeps(ctx: WorkflowContext, input: { count: number; ms: number }): Promise<number[]> {
  const ended: number[] = [];
  await Promise.all(Array.from({ length: input.count }, (_, i) => ctx.sleep(input.ms).then(() => ended.push(i))));
  return ended;
}

describe.each(backends)('timers on $name', (backend) => {
  const db = useSchema(backend);

  it('fires timers due at the same ms in the order the workflow started them', async () => {
    const engine = await startEngine(db(), { workflows: { alikeSleeps } });
    try {
      const handle = await engine.startWorkflow(alikeSleeps, { count: 5, ms: 20 });
      expect(await handle.result()).toEqual([0, 1, 2, 3, 4]);
    } finally {
      await engine.close();
    }
  });

  it('fires timers due at the same ms in the order the workflow started them after a restart, due or still to arm', async () => {
    let engine = await startEngine(db(), { workflows: { alikeSleeps } });
    const due = await engine.startWorkflow(alikeSleeps, { count: 5, ms: 3_600_000 });
    const toArm = await engine.startWorkflow(alikeSleeps, { count: 5, ms: 3_600_000 });
    await engine.close();
    // While no engine runs, one workflow's timers come due and the other's draw near (each
    // workflow's at one ms: now() is the statement's).
    const timers = `"${db().schema}".timers`;
    await db().query(`UPDATE ${timers} SET due_at = now() - interval '1 second' WHERE workflow_id = $1`, [due.workflowId]);
    await db().query(`UPDATE ${timers} SET due_at = now() + interval '1 second' WHERE workflow_id = $1`, [toArm.workflowId]);
    engine = await startEngine(db(), { workflows: { alikeSleeps } });
    try {
      expect(await engine.result(due.workflowId)).toEqual([0, 1, 2, 3, 4]);
      expect(await engine.result(toArm.workflowId)).toEqual([0, 1, 2, 3, 4]);
    } finally {
      await engine.close();
    }
  });
});
