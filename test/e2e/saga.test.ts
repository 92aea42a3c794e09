import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { type ActivityContext, ActivityFailure, type WorkflowContext } from 'duraflow';

import { applyBalanceChange } from '../fixtures/activities.js';
import { backends, type TestSchema } from '../helpers/database.js';
import { fixtureActivities, startEngine } from '../helpers/engines.js';

type Fixtures = typeof import('../fixtures/activities.js');

interface TransferInput {
  databaseUrl: string;
  schema: string;
  from: string;
  to: string;
  amount: number;
}

/**
 * The bank transfer of the original's end-to-end tests: withdraw from one bank, deposit in the
 * other; if the deposit fails, the withdrawal is compensated.
 */
async function transfer(ctx: WorkflowContext, input: TransferInput): Promise<string> {
  const { adjustBalance } = ctx.activities<Fixtures>({ retry: { maxAttempts: 2, initialIntervalMs: 5 } });
  const compensations: (() => Promise<unknown>)[] = [];
  const at = { databaseUrl: input.databaseUrl, schema: input.schema };
  try {
    await adjustBalance({ ...at, account: input.from, amount: -input.amount });
    compensations.push(() => adjustBalance({ ...at, account: input.from, amount: input.amount }));
    await adjustBalance({ ...at, account: input.to, amount: input.amount });
    return 'transferred';
  } catch (error) {
    for (const compensate of compensations.reverse()) await compensate();
    return `compensated: ${(error as ActivityFailure).cause instanceof Error ? ((error as ActivityFailure).cause as Error).message : ''}`;
  }
}

describe.each(backends)('saga on $name', (backend) => {
  let db: TestSchema;
  beforeEach(async () => {
    db = await backend.schema();
    await db.query(`CREATE SCHEMA IF NOT EXISTS "${db.schema}"`);
    await db.query(`CREATE TABLE "${db.schema}".accounts (id text PRIMARY KEY, balance int NOT NULL CHECK (balance >= 0))`);
    await db.query(`CREATE TABLE "${db.schema}".applied (activity_id text PRIMARY KEY)`);
    await db.query(`INSERT INTO "${db.schema}".accounts VALUES ('bankA:alice', 100), ('bankB:bob', 0), ('bankA:carol', 50)`);
  });
  afterEach(async () => {
    await db.drop();
  });

  async function balances(): Promise<Record<string, number>> {
    const rows = await db.query<{ id: string; balance: number }>(`SELECT id, balance FROM "${db.schema}".accounts`);
    return Object.fromEntries(rows.map((r) => [r.id, r.balance]));
  }

  it('moves money between banks and compensates a failed step', async () => {
    // Thread activities reach Postgres on their own connections; the embedded database lives in
    // this thread, so there the same statement runs as an inline activity.
    const engine =
      backend.name === 'postgres'
        ? await startEngine(db, { workflows: { transfer }, activities: fixtureActivities })
        : await startEngine(db, {
            workflows: { transfer },
            inlineActivities: {
              adjustBalance: (input: { schema: string; account: string; amount: number }, ctx: ActivityContext) =>
                applyBalanceChange((text, params) => db.query(text, params).then((rows) => ({ rows })), input, ctx.activityId),
            },
          });
    try {
      const base = { databaseUrl: process.env.DATABASE_URL ?? '', schema: db.schema };
      const ok = await engine.startWorkflow(transfer, { ...base, from: 'bankA:alice', to: 'bankB:bob', amount: 30 });
      expect(await ok.result()).toBe('transferred');
      expect(await balances()).toEqual({ 'bankA:alice': 70, 'bankB:bob': 30, 'bankA:carol': 50 });

      // The deposit fails (no such account): the withdrawal is put back.
      const bad = await engine.startWorkflow(transfer, { ...base, from: 'bankA:carol', to: 'bankB:nobody', amount: 20 });
      expect(await bad.result()).toBe('compensated: no account bankB:nobody');
      expect(await balances()).toEqual({ 'bankA:alice': 70, 'bankB:bob': 30, 'bankA:carol': 50 });

      // The withdrawal itself fails: nothing to compensate, nothing moved.
      const broke = await engine.startWorkflow(transfer, { ...base, from: 'bankB:bob', to: 'bankA:alice', amount: 500 });
      expect(await broke.result()).toBe('compensated: insufficient funds in bankB:bob');
      expect(await balances()).toEqual({ 'bankA:alice': 70, 'bankB:bob': 30, 'bankA:carol': 50 });
      const history = (await engine.inspect(bad.workflowId)).history.map((e) => e.type);
      expect(history.filter((t) => t === 'ActivityCompleted')).toHaveLength(2);
      expect(history).toContain('ActivityFailed');
    } finally {
      await engine.close();
    }
  });
});
