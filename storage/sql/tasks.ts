import type { TaskRow } from '../rows.js';
import type { Queryable, Tables } from '../sql.js';
import type { CommandKey } from './timers.js';

/** Inserts activity tasks, or moves existing ones to their next attempt. */
export async function upsertTasks(db: Queryable, t: Tables, tasks: readonly TaskRow[]): Promise<void> {
  await db.query(
    `INSERT INTO ${t.activityTasks}
       (workflow_id, command_id, name, input, options, attempt, visible_at, scheduled_at, last_failure)
     SELECT w, c, n, i, o, a, to_timestamp(v / 1000.0), to_timestamp(s / 1000.0), f
     FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::int[], $7::float8[],
                 $8::float8[], $9::text[]) AS u(w, c, n, i, o, a, v, s, f)
     ON CONFLICT (workflow_id, command_id) DO UPDATE SET
       attempt = excluded.attempt, visible_at = excluded.visible_at, last_failure = excluded.last_failure`,
    [
      tasks.map((x) => x.workflowId),
      tasks.map((x) => x.commandId),
      tasks.map((x) => x.name),
      tasks.map((x) => x.input ?? null),
      tasks.map((x) => x.options),
      tasks.map((x) => x.attempt),
      tasks.map((x) => x.visibleAt),
      tasks.map((x) => x.scheduledAt),
      tasks.map((x) => x.lastFailure),
    ],
  );
}

/** Deletes finished or abandoned activity tasks. */
export async function deleteTasks(db: Queryable, t: Tables, keys: readonly CommandKey[]): Promise<void> {
  await db.query(
    `DELETE FROM ${t.activityTasks} x USING unnest($1::text[], $2::int[]) AS u(w, c)
     WHERE x.workflow_id = u.w AND x.command_id = u.c`,
    [keys.map((k) => k.workflowId), keys.map((k) => k.commandId)],
  );
}

interface StoredTask {
  workflow_id: string;
  command_id: number;
  name: string;
  input: string | null;
  options: string;
  attempt: number;
  visible_at: Date;
  scheduled_at: Date;
  last_failure: string | null;
}

function toTask(r: StoredTask): TaskRow {
  return {
    workflowId: r.workflow_id,
    commandId: r.command_id,
    name: r.name,
    input: r.input ?? undefined,
    options: r.options,
    attempt: r.attempt,
    visibleAt: r.visible_at.getTime(),
    scheduledAt: r.scheduled_at.getTime(),
    lastFailure: r.last_failure,
  };
}

/**
 * Unfinished tasks of workflows whose name is in `workflowNames`, optionally only those of
 * `workflowIds` (recovery after a failed flush).
 */
export async function pendingTasks(
  db: Queryable,
  t: Tables,
  workflowNames: readonly string[],
  workflowIds?: readonly string[],
): Promise<TaskRow[]> {
  const { rows } = await db.query<StoredTask>(
    `SELECT a.* FROM ${t.activityTasks} a JOIN ${t.workflows} w ON w.id = a.workflow_id
     WHERE w.name = ANY($1::text[]) AND ($2::text[] IS NULL OR a.workflow_id = ANY($2::text[]))
     ORDER BY a.visible_at`,
    [workflowNames, workflowIds ?? null],
  );
  return rows.map(toTask);
}

/** The unfinished tasks of one workflow (for inspect). */
export async function tasksOf(db: Queryable, t: Tables, workflowId: string): Promise<TaskRow[]> {
  const { rows } = await db.query<StoredTask>(
    `SELECT * FROM ${t.activityTasks} WHERE workflow_id = $1 ORDER BY command_id`,
    [workflowId],
  );
  return rows.map(toTask);
}
