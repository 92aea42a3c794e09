import { readHistoryPayload } from '../stored-json.js';
import type { TaskRow } from '../rows.js';
import type { Queryable, Tables } from '../sql.js';

interface PendingRow {
  workflow_id: string;
  name: string;
  seq: number;
  command_id: number | null;
  payload: string | null;
  at: Date;
  attempt: number | null;
  visible_at: Date | null;
  last_failure: string | null;
}

/**
 * Activities of running workflows (whose name is in `workflowNames`, optionally only those in
 * `workflowIds`) that were scheduled and have not finished: each ActivityScheduled event without
 * an ActivityCompleted or ActivityFailed of the same command, with its retry state if an attempt
 * already failed, and its workflow's name. A recovery query; the hot path never reads it.
 * An event whose payload cannot be read (a row written by hand, say) is left out and handed to
 * `onUnreadable` with its seq: one such row must not stop the recovery of every other workflow.
 */
export async function pendingTasks(
  db: Queryable,
  t: Tables,
  workflowNames: readonly string[],
  workflowIds: readonly string[] | undefined,
  onUnreadable: (workflowId: string, seq: number, cause: Error) => void,
): Promise<{ task: TaskRow; workflowName: string }[]> {
  // One pass over each workflow's activity rows, grouped by command: an anti join (NOT EXISTS)
  // has to find an activity's end by its command id, which no index of the history has, and the
  // planner then rescans the workflow's history for every scheduled activity (a plan it picks
  // whenever it expects short histories, as it does for unanalysed tables or among many short
  // workflows): quadratic in one workflow's history, minutes for 20,000 steps, past the statement
  // timeout. A row without a command id is a group of its own, as the unreadable row it is.
  const { rows } = await db.query<PendingRow>(
    `SELECT s.workflow_id, o.name, s.seq, s.command_id, s.payload, s.at, a.attempt, a.visible_at, a.last_failure
     FROM (
       SELECT h.workflow_id, w.name, min(h.seq) AS seq
       FROM ${t.workflows} w
       JOIN ${t.history} h ON h.workflow_id = w.id
         AND h.type IN ('ActivityScheduled', 'ActivityCompleted', 'ActivityFailed')
       WHERE w.status = 'running' AND w.name = ANY($1::text[])
         AND ($2::text[] IS NULL OR w.id = ANY($2::text[]))
       GROUP BY h.workflow_id, w.name, h.command_id, CASE WHEN h.command_id IS NULL THEN h.seq END
       HAVING bool_and(h.type = 'ActivityScheduled')
     ) o
     JOIN ${t.history} s ON s.workflow_id = o.workflow_id AND s.seq = o.seq
     LEFT JOIN ${t.activityTasks} a ON a.workflow_id = s.workflow_id AND a.command_id = s.command_id
     ORDER BY coalesce(a.visible_at, s.at)`,
    [workflowNames, workflowIds ?? null],
  );
  const tasks: { task: TaskRow; workflowName: string }[] = [];
  for (const r of rows) {
    let scheduled: Record<string, unknown>;
    let commandId: number;
    try {
      // As replay reads it: a row this leaves out fails the rebuild of its workflow too.
      if (r.command_id === null) throw new TypeError('an ActivityScheduled row must have a command id; it has none');
      commandId = r.command_id;
      scheduled = readHistoryPayload('ActivityScheduled', r.payload);
    } catch (error) {
      onUnreadable(r.workflow_id, r.seq, error as Error);
      continue;
    }
    const task: TaskRow = {
      workflowId: r.workflow_id,
      commandId,
      name: scheduled.activityName as string,
      input: scheduled.input === undefined ? undefined : JSON.stringify(scheduled.input),
      options: JSON.stringify(scheduled.options ?? {}),
      attempt: r.attempt ?? 1,
      visibleAt: (r.visible_at ?? r.at).getTime(),
      scheduledAt: r.at.getTime(),
      lastFailure: r.last_failure,
    };
    tasks.push({ task, workflowName: r.name });
  }
  return tasks;
}

/** The retry state of one workflow's activities (for inspect). */
export async function tasksOf(
  db: Queryable,
  t: Tables,
  workflowId: string,
): Promise<Pick<TaskRow, 'commandId' | 'attempt' | 'visibleAt' | 'lastFailure'>[]> {
  const { rows } = await db.query<{ command_id: number; attempt: number; visible_at: Date; last_failure: string | null }>(
    `SELECT command_id, attempt, visible_at, last_failure FROM ${t.activityTasks} WHERE workflow_id = $1 ORDER BY command_id`,
    [workflowId],
  );
  return rows.map((r) => ({
    commandId: r.command_id,
    attempt: r.attempt,
    visibleAt: r.visible_at.getTime(),
    lastFailure: r.last_failure,
  }));
}
