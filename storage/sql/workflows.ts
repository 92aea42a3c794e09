import type { StoredHistoryRow, TimerRow, WorkflowRow } from '../rows.js';
import type { Queryable, Tables } from '../sql.js';

/** One workflow row, or undefined. */
export async function loadWorkflow(
  db: Queryable,
  t: Tables,
  workflowId: string,
): Promise<WorkflowRow | undefined> {
  const { rows } = await db.query<WorkflowRow>(`SELECT * FROM ${t.workflows} WHERE id = $1`, [workflowId]);
  return rows[0];
}

/** A workflow's history in seq order. */
export async function loadHistory(
  db: Queryable,
  t: Tables,
  workflowId: string,
): Promise<StoredHistoryRow[]> {
  const { rows } = await db.query<StoredHistoryRow>(
    `SELECT seq, activation, type, command_id, payload, at FROM ${t.history}
     WHERE workflow_id = $1 ORDER BY seq`,
    [workflowId],
  );
  return rows;
}

/**
 * Pending workflows of the given names due to start before `before` (epoch ms), oldest first. A
 * pending row's `start_at` is its durable start timer.
 */
export async function dueStarts(
  db: Queryable,
  t: Tables,
  workflowNames: readonly string[],
  before: number,
  limit: number,
  workflowIds?: readonly string[],
): Promise<WorkflowRow[]> {
  const { rows } = await db.query<WorkflowRow>(
    `SELECT * FROM ${t.workflows}
     WHERE status = 'pending' AND start_at < to_timestamp($2 / 1000.0) AND name = ANY($1::text[])
       AND ($4::text[] IS NULL OR id = ANY($4::text[]))
     ORDER BY start_at LIMIT $3`,
    [workflowNames, before, limit, workflowIds ?? null],
  );
  return rows;
}

/** Statuses, results and errors of the given workflows that have finished. */
export async function finishedAmong(
  db: Queryable,
  t: Tables,
  workflowIds: readonly string[],
): Promise<Pick<WorkflowRow, 'id' | 'status' | 'result' | 'error'>[]> {
  const { rows } = await db.query<Pick<WorkflowRow, 'id' | 'status' | 'result' | 'error'>>(
    `SELECT id, status, result, error FROM ${t.workflows}
     WHERE id = ANY($1::text[]) AND status IN ('completed', 'failed')`,
    [workflowIds],
  );
  return rows;
}

/** The timers of one workflow (for inspect). */
export async function timersOf(db: Queryable, t: Tables, workflowId: string): Promise<TimerRow[]> {
  const { rows } = await db.query<{ command_id: number; due_at: Date }>(
    `SELECT command_id, due_at FROM ${t.timers} WHERE workflow_id = $1 ORDER BY due_at`,
    [workflowId],
  );
  return rows.map((r) => ({ workflowId, commandId: r.command_id, dueAt: r.due_at.getTime() }));
}

/** Sends `payload` on the schema's channel when the surrounding transaction commits. */
export async function notify(db: Queryable, t: Tables, payload: string): Promise<void> {
  await db.query(`SELECT pg_notify($1, $2)`, [t.channel, payload]);
}
