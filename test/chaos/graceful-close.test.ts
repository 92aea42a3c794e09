/**
 * A graceful `engine.close()` in the middle of a load (slow activities running, starts and events
 * still coming), then a new engine on the same schema: nothing acknowledged is lost, nothing is
 * done twice, and every activity that was running at the close either had finished or runs again.
 */
import { describe, expect, it } from 'vitest';

import { MetricName, type WorkflowContext } from 'duraflow';

import { expectedMixed, mixed, waitsForGo } from '../fixtures/workflows.js';
import { ChaosRig, expectNothingLostOrDoubled, printRun } from '../helpers/chaos-rig.js';
import { backends, serverBackends } from '../helpers/database.js';
import { fixtureActivities, readMetric, startEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

describe.each(backends)('close and restart on $name', (backend) => {
  it('refuses calls after close() with EngineClosedError, and a restart finishes what was running, once', async () => {
    const db = await backend.schema();
    try {
      const options = { workflows: { mixed, waitsForGo }, activities: fixtureActivities };
      let engine = await startEngine(db, options);
      const count = 20;
      for (let i = 0; i < count; i++) await engine.startWorkflow(mixed, { n: i }, { workflowId: `m-${i}` });
      await engine.startWorkflow(waitsForGo, { label: 'g' }, { workflowId: 'g-1' });
      const waiting = engine.result('g-1').catch((error: unknown) => error);
      await engine.close();
      // A waiting result() and every later call end with the engine's typed error.
      expect(await waiting).toMatchObject({ code: 'DURAFLOW_ENGINE_CLOSED' });
      await expect(engine.startWorkflow(mixed, { n: 99 })).rejects.toMatchObject({ code: 'DURAFLOW_ENGINE_CLOSED' });
      await expect(engine.sendEvent('g-1', 'go', 1)).rejects.toMatchObject({ code: 'DURAFLOW_ENGINE_CLOSED' });
      await expect(engine.inspect('g-1')).rejects.toMatchObject({ code: 'DURAFLOW_ENGINE_CLOSED' });
      await expect(engine.result('m-0')).rejects.toMatchObject({ code: 'DURAFLOW_ENGINE_CLOSED' });

      engine = await startEngine(db, options);
      try {
        await engine.sendEvent('g-1', 'go', 1);
        expect(await engine.result('g-1', { timeoutMs: 30_000 })).toEqual({ label: 'g', ev: 1 });
        for (let i = 0; i < count; i++) {
          expect(await engine.result(`m-${i}`, { timeoutMs: 30_000 })).toBe(expectedMixed(i));
          const { history } = await engine.inspect(`m-${i}`);
          expect(history.map((e) => e.seq)).toEqual(history.map((_, k) => k + 1));
          expect(history.filter((e) => e.type === 'WorkflowCompleted')).toHaveLength(1);
          const scheduled = history.filter((e) => e.type === 'ActivityScheduled').length;
          expect(history.filter((e) => e.type === 'ActivityCompleted')).toHaveLength(scheduled);
        }
      } finally {
        await engine.close();
      }
    } finally {
      await db.drop();
    }
  });
});

/** Waits `ms` in an activity (a close aborts the attempt). */
async function waitsOnce(ctx: WorkflowContext, ms: number): Promise<number> {
  return ctx.activities<{ wait(ms: number): Promise<number> }>().wait(ms);
}

describe.each(backends)('closing with attempts waiting for a thread on $name', (backend) => {
  it('charges no attempt that the close kept from running', async () => {
    const db = await backend.schema();
    try {
      // One slot in all: one attempt runs, two wait in the pool when the engine closes.
      const engine = await startEngine(db, { workflows: { waitsOnce }, activities: fixtureActivities, activityThreads: 1, activityConcurrency: 1 });
      for (const id of ['w-0', 'w-1', 'w-2']) await engine.startWorkflow(waitsOnce, 60_000, { workflowId: id });
      await waitFor(async () => (await readMetric(engine, MetricName.ActivityTasksQueued)) === 2, 'two attempts to wait for the slot');
      await engine.close();
      // A charged attempt would have stored its retry (retry state lives in activity_tasks).
      expect(await db.query(`SELECT workflow_id, attempt FROM "${db.schema}".activity_tasks`)).toEqual([]);
    } finally {
      await db.drop();
    }
  });
});

describe.each(serverBackends)('graceful close under load on $name', (backend) => {
  it('closes with activities in flight, then a restart finishes everything exactly once', async () => {
    const rig = await ChaosRig.open(backend, { proxy: false });
    try {
      const s = `"${rig.db.schema}"`;
      const load = rig.load({ prefix: 'gc-', count: 120, spreadMs: 2500 });
      void load.run();
      // Slow activities whose effect is applied and whose completion is not recorded: running now.
      const running = (): Promise<{ activity_id: string }[]> =>
        rig.db.query<{ activity_id: string }>(
          `SELECT e.activity_id FROM ${s}.effects e
           WHERE e.activity_name = 'slowEffect' AND NOT EXISTS (
             SELECT 1 FROM ${s}.history h WHERE h.workflow_id = e.workflow_id AND h.type = 'ActivityCompleted'
               AND h.command_id = reverse(split_part(reverse(e.activity_id), '/', 1))::int)`,
        );
      await waitFor(async () => (await running()).length >= 3, 'slow activities in flight', 30_000);
      const old = rig.engine;
      const closing = rig.closeEngine();
      const inFlightAtClose = (await running()).map((r) => r.activity_id);
      expect(await closing).toBe('closed');
      // A closed engine refuses calls with its typed error.
      await expect(old.startWorkflow('chaosSeq', { n: 0 }, { workflowId: 'gc-after-close' })).rejects.toMatchObject({
        code: 'DURAFLOW_ENGINE_CLOSED',
      });
      await expect(old.inspect('gc-0')).rejects.toMatchObject({ code: 'DURAFLOW_ENGINE_CLOSED' });

      await rig.startEngine();
      const result = await rig.finish();

      // Every activity running at the close finished exactly once in history (checked by
      // finish()), its effect applied once or re-applied by a re-run.
      const effects = await rig.db.query<{ activity_id: string; runs: number }>(
        `SELECT activity_id, runs FROM ${s}.effects WHERE activity_id = ANY($1::text[])`,
        [inFlightAtClose],
      );
      const rerun = effects.filter((e) => e.runs > 1).length;
      printRun(
        'graceful close + restart',
        rig,
        result,
        `${inFlightAtClose.length} activities running at close: ${rerun} re-run, ${inFlightAtClose.length - rerun} finished before the close`,
      );
      // Each of them completed, once, in its workflow's history after the restart.
      const completions = await rig.db.query<{ activity_id: string; completions: number }>(
        `SELECT e.activity_id, count(h.seq)::int AS completions FROM ${s}.effects e
         LEFT JOIN ${s}.history h ON h.workflow_id = e.workflow_id AND h.type = 'ActivityCompleted'
           AND h.command_id = reverse(split_part(reverse(e.activity_id), '/', 1))::int
         WHERE e.activity_id = ANY($1::text[]) GROUP BY e.activity_id`,
        [inFlightAtClose],
      );
      const byId = (a: { activity_id: string }, b: { activity_id: string }): number => (a.activity_id < b.activity_id ? -1 : 1);
      expect(completions.sort(byId)).toEqual(inFlightAtClose.map((activity_id) => ({ activity_id, completions: 1 })).sort(byId));
      expectNothingLostOrDoubled(result);
    } finally {
      await rig.dispose();
    }
  });

  it('closes while the database refuses connections, then a restart finishes everything exactly once', async () => {
    const rig = await ChaosRig.open(backend, { proxy: true });
    try {
      const load = rig.load({ prefix: 'gcd-', count: 80, spreadMs: 2500 });
      void load.run();
      await rig.historyGrowth(60);
      await rig.proxy!.refuse();
      rig.proxy!.cutAll();
      // close() gives pending flushes a few tries, then gives up on them: it must end.
      const closed = await rig.closeEngine(20_000);
      await rig.proxy!.accept();
      await rig.startEngine();
      const result = await rig.finish();
      printRun('close during outage + restart', rig, result, `close(): ${closed}`);
      expect.soft(closed, 'close() during the outage').toBe('closed');
      expect.soft(result.violations, 'violations').toEqual([]);
      expect.soft(result.report.lost, 'lost workflows').toEqual([]);
      expect.soft(result.report.doubled, 'doubled workflows').toEqual([]);
    } finally {
      await rig.dispose();
    }
  });
});
