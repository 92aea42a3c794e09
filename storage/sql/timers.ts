import type { TimerRow } from '../rows.js';
import type { Queryable, Tables } from '../sql.js';

/**
 * Pending timers of workflows whose name is in `workflowNames` (and, optionally, whose id is in
 * `workflowIds`), earliest first (a workflow's timers due at the same ms in the order it started
 * them), each with its workflow's name.
 */
export async function timersFor(
  db: Queryable,
  t: Tables,
  workflowNames: readonly string[],
  workflowIds?: readonly string[],
): Promise<(TimerRow & { workflowName: string })[]> {
  const { rows } = await db.query<{ workflow_id: string; name: string; command_id: number; due_at: Date }>(
    `SELECT x.workflow_id, w.name, x.command_id, x.due_at FROM ${t.timers} x
     JOIN ${t.workflows} w ON w.id = x.workflow_id
     WHERE w.name = ANY($1::text[]) AND ($2::text[] IS NULL OR x.workflow_id = ANY($2::text[]))
     ORDER BY x.due_at, x.workflow_id, x.command_id`,
    [workflowNames, workflowIds ?? null],
  );
  return rows.map((r) => ({ workflowId: r.workflow_id, workflowName: r.name, commandId: r.command_id, dueAt: r.due_at.getTime() }));
}
