import type { NewWorkflowRow } from '../rows.js';
import type { Queryable, Tables } from '../sql.js';

/**
 * Creates workflow rows in status `pending` (their `start_at` is their durable start timer). A row
 * whose id exists already is left untouched; the returned set holds the ids actually inserted.
 */
export async function insertWorkflows(
  db: Queryable,
  t: Tables,
  rows: readonly NewWorkflowRow[],
): Promise<Set<string>> {
  const { rows: inserted } = await db.query<{ id: string }>(
    `INSERT INTO ${t.workflows} (id, name, version, status, input, start_at, created_at)
     SELECT id, name, version, 'pending', input, to_timestamp(start_at / 1000.0), to_timestamp(created_at / 1000.0)
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[])
       AS u(id, name, version, input, start_at, created_at)
     ON CONFLICT (id) DO NOTHING
     RETURNING id`,
    [
      rows.map((r) => r.id),
      rows.map((r) => r.name),
      rows.map((r) => r.version),
      rows.map((r) => r.input ?? null),
      rows.map((r) => r.startAt),
      rows.map((r) => r.createdAt),
    ],
  );
  return new Set(inserted.map((r) => r.id));
}
