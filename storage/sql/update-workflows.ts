import type { WorkflowWrite } from '../rows.js';
import type { Queryable, Tables } from '../sql.js';

/**
 * Applies the row changes of many writes, each only if the row's `next_seq` still equals the
 * write's `expectedSeq`. Returns how many rows matched; fewer than `writes.length` means another
 * writer got there first and the caller must roll back.
 */
export async function updateWorkflows(
  db: Queryable,
  t: Tables,
  writes: readonly WorkflowWrite[],
): Promise<number> {
  const { rowCount } = await db.query(
    `UPDATE ${t.workflows} w SET
       next_seq = u.next_seq,
       status = coalesce(u.status, w.status),
       vars = coalesce(u.vars, w.vars),
       result = CASE WHEN u.set_result THEN u.result ELSE w.result END,
       error = CASE WHEN u.set_error THEN u.error ELSE w.error END,
       started_at = coalesce(to_timestamp(u.started_at / 1000.0), w.started_at),
       completed_at = coalesce(to_timestamp(u.completed_at / 1000.0), w.completed_at)
     FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::text[], $6::bool[], $7::text[],
                 $8::bool[], $9::text[], $10::float8[], $11::float8[])
       AS u(id, expected, next_seq, status, vars, set_result, result, set_error, error, started_at, completed_at)
     WHERE w.id = u.id AND w.next_seq = u.expected`,
    [
      writes.map((w) => w.workflowId),
      writes.map((w) => w.expectedSeq),
      writes.map((w) => w.nextSeq),
      writes.map((w) => w.status ?? null),
      writes.map((w) => w.vars ?? null),
      writes.map((w) => w.result !== undefined),
      writes.map((w) => w.result ?? null),
      writes.map((w) => w.error !== undefined),
      writes.map((w) => w.error ?? null),
      writes.map((w) => w.startedAt ?? null),
      writes.map((w) => w.completedAt ?? null),
    ],
  );
  return rowCount;
}
