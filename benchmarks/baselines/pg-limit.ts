import { randomBytes } from 'node:crypto';

import pg from 'pg';

/** What the bare insert loop achieved. */
export interface LimitResult {
  rows: number;
  seconds: number;
  rowsPerSec: number;
  transactions: number;
  batchSize: number;
  connections: number;
}

/**
 * The database limit for the engine's write pattern: `rows` history-shaped rows inserted by a
 * bare `pg` loop, `batchSize` rows per transaction in one multi-row `unnest` statement (as the
 * engine's WAL does), over `connections` connections, with no engine around it. It writes into
 * a scratch schema it drops afterwards.
 */
export async function measureInsertLimit(options: {
  databaseUrl: string;
  rows: number;
  batchSize: number;
  connections: number;
}): Promise<LimitResult> {
  const schema = `bench_limit_${randomBytes(4).toString('hex')}`;
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: options.connections });
  await pool.query(`CREATE SCHEMA "${schema}"`);
  await pool.query(
    `CREATE TABLE "${schema}".history (workflow_id text NOT NULL, seq integer NOT NULL, activation integer NOT NULL,
       type text NOT NULL, command_id integer, payload text, at timestamptz NOT NULL, PRIMARY KEY (workflow_id, seq))`,
  );
  const batchSize = Math.max(1, Math.round(options.batchSize));
  const batches = Math.ceil(options.rows / batchSize);
  let next = 0;
  let written = 0;
  const payload = '{"activityName":"step","input":1}';
  const worker = async (): Promise<void> => {
    const client = await pool.connect();
    try {
      for (;;) {
        const batch = next++;
        if (batch >= batches) return;
        const count = Math.min(batchSize, options.rows - batch * batchSize);
        const ids: string[] = [];
        const seqs: number[] = [];
        for (let i = 0; i < count; i++) {
          const row = batch * batchSize + i;
          ids.push(`wf-${Math.floor(row / 20)}`);
          seqs.push((row % 20) + 1);
        }
        const now = Date.now();
        await client.query('BEGIN');
        await client.query(
          `INSERT INTO "${schema}".history (workflow_id, seq, activation, type, command_id, payload, at)
           SELECT w, s, s, 'ActivityCompleted', s, $3, to_timestamp($4 / 1000.0)
           FROM unnest($1::text[], $2::int[]) AS u(w, s)`,
          [ids, seqs, payload, now],
        );
        await client.query('COMMIT');
        written += count;
      }
    } finally {
      client.release();
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: options.connections }, worker));
  const seconds = (performance.now() - started) / 1000;
  await pool.query(`DROP SCHEMA "${schema}" CASCADE`);
  await pool.end();
  return {
    rows: written,
    seconds,
    rowsPerSec: written / seconds,
    transactions: batches,
    batchSize,
    connections: options.connections,
  };
}
