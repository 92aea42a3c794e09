import { describe, expect, it } from 'vitest';

import { pendingTasks } from '../../storage/sql/tasks.js';
import type { QueryResult, Queryable } from '../../storage/sql.js';
import { backends } from '../helpers/database.js';
import { useStore } from '../helpers/storage.js';

/** One node of a plan as `EXPLAIN (ANALYZE, FORMAT JSON)` gives it. */
interface PlanNode {
  'Relation Name'?: string;
  'Actual Rows'?: number;
  'Actual Loops'?: number;
  'Rows Removed by Filter'?: number;
  'Rows Removed by Index Recheck'?: number;
  Plans?: PlanNode[];
}

/** History rows the executor read (returned or filtered out), over every loop of every scan. */
function historyRowsRead(node: PlanNode): number {
  let read = 0;
  if (node['Relation Name'] === 'history') {
    const perLoop = (node['Actual Rows'] ?? 0) + (node['Rows Removed by Filter'] ?? 0) + (node['Rows Removed by Index Recheck'] ?? 0);
    read += perLoop * (node['Actual Loops'] ?? 0);
  }
  for (const child of node.Plans ?? []) read += historyRowsRead(child);
  return read;
}

/** Runs each statement as `EXPLAIN ANALYZE` on `db` and keeps its plan; answers with no rows. */
function explaining(db: Queryable, plans: PlanNode[]): Queryable {
  return {
    async query<Row>(text: string, params?: unknown[]): Promise<QueryResult<Row>> {
      const { rows } = await db.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (ANALYZE, FORMAT JSON) ${text}`, params);
      const json = rows[0]!['QUERY PLAN'];
      const plan = (typeof json === 'string' ? JSON.parse(json) : json) as { Plan: PlanNode }[];
      plans.push(plan[0]!.Plan);
      return { rows: [], rowCount: 0 };
    },
    exec: (script) => db.exec(script),
  };
}

const LONG_STEPS = 1_500;
const SHORT_WORKFLOWS = 3_000;

describe.each(backends)('pendingTasks on $name', (backend) => {
  const store = useStore(backend);

  /**
   * One running workflow of LONG_STEPS finished activities and one open, among SHORT_WORKFLOWS
   * completed three-step ones (so the planner expects short histories). `isAnalysed` runs ANALYZE
   * first, as autovacuum would at some point; a fresh table has no statistics.
   */
  async function seed(isAnalysed: boolean): Promise<number> {
    const { db } = store();
    const s = `"${db.schema}"`;
    await db.query(
      `INSERT INTO ${s}.workflows (id, name, version, status, start_at)
       VALUES ('long', 'w', '1', 'running', now())`,
    );
    await db.query(
      `INSERT INTO ${s}.workflows (id, name, version, status, start_at)
       SELECT 'short-' || i, 'w', '1', 'completed', now() FROM generate_series(1, $1::int) AS i`,
      [SHORT_WORKFLOWS],
    );
    // seq 1 is the start; then each activity's scheduling and completion; the last one stays open.
    await db.query(
      `INSERT INTO ${s}.history (workflow_id, seq, activation, type, command_id, payload, at)
       SELECT 'long', 1, 1, 'WorkflowStarted', NULL, '{"workflowName":"w","version":"1"}', now()
       UNION ALL
       SELECT 'long', k + 1, (k + 1) / 2 + 1,
              CASE WHEN k % 2 = 1 THEN 'ActivityScheduled' ELSE 'ActivityCompleted' END, (k + 1) / 2,
              CASE WHEN k % 2 = 1 THEN '{"activityName":"step","input":1}' ELSE '{"activityName":"step","attempts":1,"result":1}' END,
              now()
       FROM generate_series(1, $1::int * 2 + 1) AS k`,
      [LONG_STEPS],
    );
    await db.query(
      `INSERT INTO ${s}.history (workflow_id, seq, activation, type, command_id, payload, at)
       SELECT 'short-' || i, k, k, CASE k WHEN 1 THEN 'WorkflowStarted' WHEN 2 THEN 'ActivityScheduled' ELSE 'ActivityCompleted' END,
              CASE WHEN k = 1 THEN NULL ELSE 1 END, '{"activityName":"step"}', now()
       FROM generate_series(1, $1::int) AS i, generate_series(1, 3) AS k`,
      [SHORT_WORKFLOWS],
    );
    if (isAnalysed) await db.query(`ANALYZE ${s}.workflows, ${s}.history, ${s}.activity_tasks`);
    const [counted] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${s}.history`);
    return counted!.n;
  }

  it('finds the open activity of a long history', async () => {
    const { sql, tables } = store();
    await seed(true);
    const tasks = await pendingTasks(sql, tables, ['w'], undefined, () => undefined);
    expect(tasks.map(({ task, workflowName }) => [task.workflowId, task.commandId, task.name, workflowName])).toEqual([
      ['long', LONG_STEPS + 1, 'step', 'w'],
    ]);
    expect((await pendingTasks(sql, tables, ['w'], ['long'], () => undefined)).length).toBe(1);
  });

  it('reads a long history a bounded number of times, not once per activity', async () => {
    const { sql, tables } = store();
    for (const isAnalysed of [false, true]) {
      const historyRows = await seed(isAnalysed);
      for (const workflowIds of [undefined, ['long']]) {
        const plans: PlanNode[] = [];
        await pendingTasks(explaining(sql, plans), tables, ['w'], workflowIds, () => undefined);
        // An anti join that rescans the workflow's history per activity reads it LONG_STEPS times
        // (millions of rows here); a plan linear in the history reads every row a few times at most.
        const read = historyRowsRead(plans[0]!);
        expect(read, `history rows read (${isAnalysed ? 'analysed' : 'no statistics'}, ${workflowIds ? 'one workflow' : 'all'})`).toBeLessThanOrEqual(3 * historyRows);
      }
      const s = `"${store().db.schema}"`;
      await store().db.query(`TRUNCATE ${s}.workflows, ${s}.history`);
    }
  });
});
