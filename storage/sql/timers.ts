import type { TimerRow } from '../rows.js';
import type { Queryable, Tables } from '../sql.js';

/** A (workflow, command) pair naming a timer or an activity task. */
export interface CommandKey {
  workflowId: string;
  commandId: number;
}

/** Inserts durable timers. */
export async function insertTimers(db: Queryable, t: Tables, timers: readonly TimerRow[]): Promise<void> {
  await db.query(
    `INSERT INTO ${t.timers} (workflow_id, command_id, due_at)
     SELECT w, c, to_timestamp(d / 1000.0) FROM unnest($1::text[], $2::int[], $3::float8[]) AS u(w, c, d)
     ON CONFLICT DO NOTHING`,
    [timers.map((x) => x.workflowId), timers.map((x) => x.commandId), timers.map((x) => x.dueAt)],
  );
}

/** Deletes durable timers that fired or are no longer awaited. */
export async function deleteTimers(db: Queryable, t: Tables, keys: readonly CommandKey[]): Promise<void> {
  await db.query(
    `DELETE FROM ${t.timers} x USING unnest($1::text[], $2::int[]) AS u(w, c)
     WHERE x.workflow_id = u.w AND x.command_id = u.c`,
    [keys.map((k) => k.workflowId), keys.map((k) => k.commandId)],
  );
}

/**
 * Pending timers of workflows whose name is in `workflowNames` (and, optionally, whose id is in
 * `workflowIds`), earliest first.
 */
export async function timersFor(
  db: Queryable,
  t: Tables,
  workflowNames: readonly string[],
  workflowIds?: readonly string[],
): Promise<TimerRow[]> {
  const { rows } = await db.query<{ workflow_id: string; command_id: number; due_at: Date }>(
    `SELECT x.workflow_id, x.command_id, x.due_at FROM ${t.timers} x
     JOIN ${t.workflows} w ON w.id = x.workflow_id
     WHERE w.name = ANY($1::text[]) AND ($2::text[] IS NULL OR x.workflow_id = ANY($2::text[]))
     ORDER BY x.due_at`,
    [workflowNames, workflowIds ?? null],
  );
  return rows.map((r) => ({ workflowId: r.workflow_id, commandId: r.command_id, dueAt: r.due_at.getTime() }));
}
