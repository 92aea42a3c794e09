import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import type { ActivityContext, WorkflowContext } from 'duraflow';

import { backends, type TestSchema } from '../helpers/database.js';
import { fixtureActivities, startEngine } from '../helpers/engines.js';

type Fixtures = typeof import('../fixtures/activities.js');

async function checksItself(ctx: WorkflowContext, input: { databaseUrl: string; schema: string }): Promise<boolean[]> {
  const { findOwnScheduledEvent } = ctx.activities<Fixtures>();
  return Promise.all([findOwnScheduledEvent(input), findOwnScheduledEvent(input), findOwnScheduledEvent(input)]);
}

async function twoSteps(ctx: WorkflowContext, input: { n: number }): Promise<number> {
  const { double, add } = ctx.activities<Fixtures>();
  const d = await double(input.n);
  return add({ a: d, b: 1 });
}

describe.each(backends)('durability and group commit on $name', (backend) => {
  let db: TestSchema;
  beforeEach(async () => {
    db = await backend.schema();
  });
  afterEach(async () => {
    await db.drop();
  });

  it('commits ActivityScheduled before the activity runs (seen from another connection)', async () => {
    // On Postgres the activity runs in a thread with its own connection. The embedded database
    // has one connection in this thread: there the activity runs inline and reads through it,
    // which would miss the row if the activity started before the WAL transaction did.
    const engine =
      backend.name === 'postgres'
        ? await startEngine(db, { workflows: { checksItself }, activities: fixtureActivities })
        : await startEngine(db, {
            workflows: { checksItself },
            inlineActivities: {
              findOwnScheduledEvent: async (input: { schema: string }, ctx: ActivityContext) => {
                const commandId = Number(ctx.activityId.split('/').pop());
                const rows = await db.query(
                  `SELECT 1 FROM "${input.schema}".history WHERE workflow_id = $1 AND command_id = $2 AND type = 'ActivityScheduled'`,
                  [ctx.workflowId, commandId],
                );
                return rows.length === 1;
              },
            },
          });
    try {
      const handle = await engine.startWorkflow(checksItself, { databaseUrl: process.env.DATABASE_URL ?? '', schema: db.schema });
      expect(await handle.result()).toEqual([true, true, true]);
    } finally {
      await engine.close();
    }
  });

  it('commits the events of 500 concurrent workflows in far fewer transactions than events', async () => {
    const engine = await startEngine(db, { workflows: { twoSteps }, activities: fixtureActivities });
    try {
      const handles = await Promise.all(Array.from({ length: 500 }, (_, n) => engine.startWorkflow(twoSteps, { n })));
      const results = await Promise.all(handles.map((h) => h.result()));
      results.forEach((r, n) => expect(r).toBe(2 * n + 1));
    } finally {
      await engine.close();
    }
    // xmin is the id of the transaction that inserted a row: distinct values count transactions.
    const [stats] = await db.query<{ events: number; transactions: number }>(
      `SELECT count(*)::int AS events, count(DISTINCT xmin::text)::int AS transactions FROM "${db.schema}".history`,
    );
    expect(stats!.events).toBe(500 * 6);
    // One transaction per step per workflow would be 2,000 (4 activations each).
    expect(stats!.transactions).toBeLessThan(stats!.events / 10);
  });
});
