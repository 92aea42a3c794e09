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
  const { rows } = await db.query<PendingRow>(
    `SELECT s.workflow_id, w.name, s.seq, s.command_id, s.payload, s.at, a.attempt, a.visible_at, a.last_failure
     FROM ${t.workflows} w
     JOIN ${t.history} s ON s.workflow_id = w.id AND s.type = 'ActivityScheduled'
     LEFT JOIN ${t.activityTasks} a ON a.workflow_id = s.workflow_id AND a.command_id = s.command_id
     WHERE w.status = 'running' AND w.name = ANY($1::text[])
       AND ($2::text[] IS NULL OR w.id = ANY($2::text[]))
       AND NOT EXISTS (
         SELECT 1 FROM ${t.history} d
         WHERE d.workflow_id = s.workflow_id AND d.command_id = s.command_id
           AND d.type IN ('ActivityCompleted', 'ActivityFailed'))
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
