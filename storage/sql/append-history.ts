import type { HistoryRow } from '../rows.js';
import type { Queryable, Tables } from '../sql.js';

/** One workflow's history rows, for a multi-workflow append. */
export interface HistoryAppend {
  workflowId: string;
  rows: readonly HistoryRow[];
}

/** Appends history rows of many workflows in one statement. */
export async function appendHistory(
  db: Queryable,
  t: Tables,
  appends: readonly HistoryAppend[],
): Promise<number> {
  const workflowIds: string[] = [];
  const seqs: number[] = [];
  const activations: number[] = [];
  const types: string[] = [];
  const commandIds: (number | null)[] = [];
  const payloads: (string | null)[] = [];
  const ats: number[] = [];
  for (const { workflowId, rows } of appends) {
    for (const row of rows) {
      workflowIds.push(workflowId);
      seqs.push(row.seq);
      activations.push(row.activation);
      types.push(row.type);
      commandIds.push(row.commandId);
      payloads.push(row.payload);
      ats.push(row.at);
    }
  }
  if (seqs.length === 0) return 0;
  await db.query(
    `INSERT INTO ${t.history} (workflow_id, seq, activation, type, command_id, payload, at)
     SELECT w, s, a, ty, c, p, to_timestamp(at / 1000.0)
     FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::int[], $6::text[], $7::float8[])
       AS u(w, s, a, ty, c, p, at)`,
    [workflowIds, seqs, activations, types, commandIds, payloads, ats],
  );
  return seqs.length;
}
