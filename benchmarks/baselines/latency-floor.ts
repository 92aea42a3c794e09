import { randomBytes } from 'node:crypto';

import pg from 'pg';
import { Piscina } from 'piscina';

import { percentiles } from '../stats.js';

/** What the bare sequence of commits and thread hops took, per workflow. */
export interface LatencyFloorResult {
  workflows: number;
  commitsPerWorkflow: number;
  workflowP50Ms: number;
  workflowP95Ms: number;
  workflowP99Ms: number;
}

/**
 * The floor under one workflow's end-to-end latency: what the durable steps of an S-step workflow
 * cost with no engine around them. Started in-process, such a workflow needs S + 1 commits in
 * order (its creation with the first step, then one per completed activity) and S round trips to
 * an activity thread, each waiting for the commit before it. This runs exactly that sequence, one
 * workflow at a time: single-row insert transactions on one `pg` connection, interleaved with
 * no-op Piscina tasks on one thread. Everything the engine adds (replay state, history encoding,
 * the WAL, metrics) is what its latency exceeds this by.
 */
export async function measureLatencyFloor(options: {
  databaseUrl: string;
  steps: number;
  workflows: number;
}): Promise<LatencyFloorResult> {
  const schema = `bench_floor_${randomBytes(4).toString('hex')}`;
  const client = new pg.Client({ connectionString: options.databaseUrl });
  await client.connect();
  const thread = new Piscina({ filename: new URL('./noop-thread.js', import.meta.url).href, minThreads: 1, maxThreads: 1 });
  try {
    await client.query(`CREATE SCHEMA "${schema}"`);
    await client.query(`CREATE TABLE "${schema}".history (workflow_id text NOT NULL, seq integer NOT NULL, payload text, PRIMARY KEY (workflow_id, seq))`);
    const insert = {
      name: `floor-insert-${schema}`,
      text: `INSERT INTO "${schema}".history (workflow_id, seq, payload) VALUES ($1, $2, $3)`,
    };
    const payload = '{"activityName":"step","input":1}';
    const one = async (id: string): Promise<number> => {
      const started = performance.now();
      await client.query({ ...insert, values: [id, 0, payload] });
      for (let step = 1; step <= options.steps; step++) {
        await thread.run(step);
        await client.query({ ...insert, values: [id, step, payload] });
      }
      return performance.now() - started;
    };
    for (let i = 0; i < 50; i++) await one(`warm-${i}`);
    const latencies: number[] = [];
    for (let i = 0; i < options.workflows; i++) latencies.push(await one(`wf-${i}`));
    const { p50, p95, p99 } = percentiles(latencies);
    return {
      workflows: options.workflows,
      commitsPerWorkflow: options.steps + 1,
      workflowP50Ms: p50,
      workflowP95Ms: p95,
      workflowP99Ms: p99,
    };
  } finally {
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
    await client.end();
    await thread.destroy();
  }
}
