import type { NewWorkflowRow, WorkflowWrite } from '../rows.js';
import { isRaisedBy } from '../pg-errors.js';
import type { Queryable, Tables } from '../sql.js';

/** What one flush changed. */
export interface FlushResult {
  /** Ids of the workflows the batch created (a taken id is absent). */
  inserted: Set<string>;
  /** Workflow rows updated; must equal the number of writes that change their row. */
  updated: number;
}

const statements = new Map<string, string>();

/** Marks the error the statement raises on purpose when a row to update is missing. */
const MISSING_ROW_MARKER = 'duraflow-missing-workflow-row';

/**
 * The whole batch as ONE statement of data-modifying CTEs: one round trip, atomic on its own
 * (no BEGIN/COMMIT), one multi-row `unnest` per table, and a fixed text per schema so it can be a
 * prepared statement. Empty arrays make a part a no-op. The CTEs share one snapshot, so no two
 * parts may touch the same row; the WAL's merge guarantees that (an insert and a delete of one
 * timer or task in the same batch cancel out before they get here).
 *
 * History rows have the primary key (workflow_id, seq): a writer whose idea of a workflow's
 * history is stale collides with the rows already there, and the statement fails as a whole.
 */
function flushStatement(t: Tables): string {
  let text = statements.get(t.schema);
  if (text) return text;
  text = `WITH
  ins_wf AS (
    INSERT INTO ${t.workflows} (id, name, version, status, input, start_at, created_at)
    SELECT id, name, version, 'pending', input, to_timestamp(start_at / 1000.0), to_timestamp(created_at / 1000.0)
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[])
      AS u(id, name, version, input, start_at, created_at)
    ON CONFLICT (id) DO NOTHING
    RETURNING id),
  ins_h AS (
    -- One JSON document for all history rows: serialising it is one native JSON.stringify per
    -- workflow, where text[] parameters are escaped element by element in JavaScript.
    INSERT INTO ${t.history} (workflow_id, seq, activation, type, command_id, payload, at)
    SELECT x.w, r.seq, r.activation, r.type, r."commandId", r.payload, to_timestamp(r.at / 1000.0)
    FROM json_to_recordset($7::json) AS x(w text, rows json),
         json_to_recordset(x.rows) AS r(seq int, activation int, type text, "commandId" int, payload text, at float8)),
  upd AS (
    UPDATE ${t.workflows} w SET
      status = coalesce(u.status, w.status),
      vars = coalesce(u.vars, w.vars),
      result = CASE WHEN u.set_result THEN u.result ELSE w.result END,
      error = CASE WHEN u.set_error THEN u.error ELSE w.error END,
      started_at = coalesce(to_timestamp(u.started_at / 1000.0), w.started_at),
      completed_at = coalesce(to_timestamp(u.completed_at / 1000.0), w.completed_at)
    FROM unnest($8::text[], $9::text[], $10::text[], $11::bool[], $12::text[], $13::bool[], $14::text[],
                $15::float8[], $16::float8[])
      AS u(id, status, vars, set_result, result, set_error, error, started_at, completed_at)
    WHERE w.id = u.id
    RETURNING 1),
  ins_t AS (
    INSERT INTO ${t.timers} (workflow_id, command_id, due_at)
    SELECT w, c, to_timestamp(d / 1000.0) FROM unnest($17::text[], $18::int[], $19::float8[]) AS u(w, c, d)
    ON CONFLICT DO NOTHING),
  del_t AS (
    DELETE FROM ${t.timers} x USING unnest($20::text[], $21::int[]) AS u(w, c)
    WHERE x.workflow_id = u.w AND x.command_id = u.c),
  up_a AS (
    INSERT INTO ${t.activityTasks} (workflow_id, command_id, name, input, options, attempt, visible_at, scheduled_at, last_failure)
    SELECT w, c, n, i, o, a, to_timestamp(v / 1000.0), to_timestamp(s / 1000.0), f
    FROM unnest($22::text[], $23::int[], $24::text[], $25::text[], $26::text[], $27::int[], $28::float8[],
                $29::float8[], $30::text[]) AS u(w, c, n, i, o, a, v, s, f)
    ON CONFLICT (workflow_id, command_id) DO UPDATE SET
      attempt = excluded.attempt, visible_at = excluded.visible_at, last_failure = excluded.last_failure),
  del_a AS (
    DELETE FROM ${t.activityTasks} x USING unnest($31::text[], $32::int[]) AS u(w, c)
    WHERE x.workflow_id = u.w AND x.command_id = u.c),
  del_i AS (
    DELETE FROM ${t.inbox} WHERE id = ANY($33::bigint[])),
  note AS (
    SELECT pg_notify($34, 'done') WHERE $35::bool),
  checked AS (
    -- A row to update that does not exist aborts the whole statement: the cast fails at run time,
    -- only on that branch, with a message naming the problem.
    SELECT CASE WHEN n <> $36::int
      THEN ('${MISSING_ROW_MARKER}: ' || ($36::int - n) || ' workflow row(s) to update do not exist')::int
      ELSE n END AS updated
    FROM (SELECT count(*)::int AS n FROM upd) c)
SELECT (SELECT coalesce(array_agg(id), '{}') FROM ins_wf) AS inserted,
       (SELECT updated FROM checked) AS updated,
       (SELECT count(*) FROM note)::int AS notified`;
  statements.set(t.schema, text);
  return text;
}

/** Whether a write changes its workflow's row (and so takes part in the UPDATE). */
export function changesRow(w: WorkflowWrite): boolean {
  return (
    w.status !== undefined ||
    w.vars !== undefined ||
    w.result !== undefined ||
    w.error !== undefined ||
    w.startedAt !== undefined ||
    w.completedAt !== undefined
  );
}

/** Commits a batch of starts and workflow writes in one statement. */
export async function flushBatch(
  db: Queryable,
  t: Tables,
  starts: readonly NewWorkflowRow[],
  writes: readonly WorkflowWrite[],
): Promise<FlushResult> {
  let history = '';
  const updates: WorkflowWrite[] = [];
  const timerInserts: { w: string; c: number; d: number }[] = [];
  const timerDeletes: { w: string; c: number }[] = [];
  const taskDeletes: { w: string; c: number }[] = [];
  const tasks = writes.flatMap((w) => w.tasksUpsert);
  const inbox: number[] = [];
  let notify = false;
  for (const w of writes) {
    if (w.history.length > 0) {
      history += `${history ? ',' : '['}{"w":${JSON.stringify(w.workflowId)},"rows":${JSON.stringify(w.history)}}`;
    }
    if (changesRow(w)) updates.push(w);
    for (const x of w.timersInsert) timerInserts.push({ w: w.workflowId, c: x.commandId, d: x.dueAt });
    for (const c of w.timersDelete) timerDeletes.push({ w: w.workflowId, c });
    for (const c of w.tasksDelete) taskDeletes.push({ w: w.workflowId, c });
    inbox.push(...w.inboxDelete);
    notify ||= w.isTerminal;
  }
  const { rows } = await db.query<{ inserted: string[]; updated: number }>(
    flushStatement(t),
    [
      starts.map((r) => r.id),
      starts.map((r) => r.name),
      starts.map((r) => r.version),
      starts.map((r) => r.input ?? null),
      starts.map((r) => r.startAt),
      starts.map((r) => r.createdAt),
      history ? `${history}]` : '[]',
      updates.map((w) => w.workflowId),
      updates.map((w) => w.status ?? null),
      updates.map((w) => w.vars ?? null),
      updates.map((w) => w.result !== undefined),
      updates.map((w) => w.result ?? null),
      updates.map((w) => w.error !== undefined),
      updates.map((w) => w.error ?? null),
      updates.map((w) => w.startedAt ?? null),
      updates.map((w) => w.completedAt ?? null),
      timerInserts.map((x) => x.w),
      timerInserts.map((x) => x.c),
      timerInserts.map((x) => x.d),
      timerDeletes.map((x) => x.w),
      timerDeletes.map((x) => x.c),
      tasks.map((x) => x.workflowId),
      tasks.map((x) => x.commandId),
      tasks.map((x) => x.name),
      tasks.map((x) => x.input ?? null),
      tasks.map((x) => x.options),
      tasks.map((x) => x.attempt),
      tasks.map((x) => x.visibleAt),
      tasks.map((x) => x.scheduledAt),
      tasks.map((x) => x.lastFailure),
      taskDeletes.map((x) => x.w),
      taskDeletes.map((x) => x.c),
      inbox,
      t.channel,
      notify,
      updates.length,
    ],
    `duraflow_flush_${t.schema}`,
  ).catch((error: unknown) => {
    if (isRaisedBy(error, MISSING_ROW_MARKER)) throw new MissingWorkflowRowError(String((error as Error).message), { cause: error });
    throw error;
  });
  const row = rows[0]!;
  return { inserted: new Set(row.inserted), updated: row.updated };
}

/** A write named a workflow whose row does not exist (an internal error; the batch is refused). */
export class MissingWorkflowRowError extends Error {
  readonly code = 'DURAFLOW_MISSING_WORKFLOW_ROW';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MissingWorkflowRowError';
  }
}
