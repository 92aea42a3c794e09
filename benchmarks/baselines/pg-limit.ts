import { randomBytes } from 'node:crypto';

import pg from 'pg';

import type { HistoryColumns } from '../scenarios.js';
import { postgresCpuSeconds } from '../system.js';

/** What the bare insert loop achieved. */
export interface LimitResult {
  rows: number;
  seconds: number;
  rowsPerSec: number;
  transactions: number;
  batchSize: number;
  connections: number;
  /** The database's CPU per row written, in µs (local servers only): to set beside the engine's per event. */
  databaseCpuUsPerRow: number | undefined;
}

/**
 * The database limit for the engine's write pattern: the history rows the engine wrote (`rows`,
 * read back from its schema, payloads and all) inserted again by a bare `pg` loop, `batchSize`
 * rows per statement (one multi-row `unnest` insert, its own transaction, as the engine's flush
 * is), over `connections` connections, with no engine around it. It writes into a scratch schema
 * it drops afterwards.
 */
export async function measureInsertLimit(options: {
  databaseUrl: string;
  rows: HistoryColumns;
  batchSize: number;
  connections: number;
}): Promise<LimitResult> {
  const schema = `bench_limit_${randomBytes(4).toString('hex')}`;
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: options.connections });
  try {
    await pool.query(`CREATE SCHEMA "${schema}"`);
    await pool.query(
      `CREATE TABLE "${schema}".history (workflow_id text NOT NULL, seq integer NOT NULL, activation integer NOT NULL,
         type text NOT NULL, command_id integer, payload text, at timestamptz NOT NULL, PRIMARY KEY (workflow_id, seq))`,
    );
    const { rows } = options;
    const total = rows.seq.length;
    const batchSize = Math.max(1, Math.round(options.batchSize));
    const batches = Math.ceil(total / batchSize);
    const insert = {
      name: 'bench_limit_insert',
      text: `INSERT INTO "${schema}".history (workflow_id, seq, activation, type, command_id, payload, at)
             SELECT w, s, a, t, c, p, to_timestamp(at / 1000.0)
             FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::int[], $6::text[], $7::float8[])
               AS u(w, s, a, t, c, p, at)`,
    };
    let next = 0;
    let written = 0;
    const worker = async (): Promise<void> => {
      const client = await pool.connect();
      try {
        for (;;) {
          const batch = next++;
          if (batch >= batches) return;
          const from = batch * batchSize;
          const to = Math.min(total, from + batchSize);
          await client.query({
            ...insert,
            values: [
              rows.workflowId.slice(from, to),
              rows.seq.slice(from, to),
              rows.activation.slice(from, to),
              rows.type.slice(from, to),
              rows.commandId.slice(from, to),
              rows.payload.slice(from, to),
              rows.at.slice(from, to),
            ],
          });
          written += to - from;
        }
      } finally {
        client.release();
      }
    };
    const databaseCpuBefore = await postgresCpuSeconds();
    const started = performance.now();
    await Promise.all(Array.from({ length: options.connections }, worker));
    const seconds = (performance.now() - started) / 1000;
    const databaseCpuAfter = await postgresCpuSeconds();
    return {
      rows: written,
      seconds,
      rowsPerSec: written / seconds,
      transactions: batches,
      batchSize,
      connections: options.connections,
      databaseCpuUsPerRow:
        databaseCpuBefore === undefined || databaseCpuAfter === undefined
          ? undefined
          : ((databaseCpuAfter - databaseCpuBefore) * 1e6) / written,
    };
  } finally {
    // Whatever happened: a run that failed must not leave its scratch schema behind.
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
    await pool.end();
  }
}
