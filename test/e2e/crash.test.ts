import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { createEngine, type Engine } from 'duraflow';

import { expectedMixed, mixed, waitsForGo } from '../fixtures/workflows.js';
import { EMBEDDED_STARTS_TEST_MS, spawnFixture } from '../helpers/child-engine.js';
import { backends } from '../helpers/database.js';
import { fixtureActivities, trackedEngines } from '../helpers/engines.js';

const COUNT = 200;

async function checkAll(engine: Engine): Promise<void> {
  const results = await Promise.all(
    Array.from({ length: COUNT }, (_, i) => engine.result<number>(`w-${i}`, { timeoutMs: 60_000 })),
  );
  results.forEach((result, i) => expect(result).toBe(expectedMixed(i)));
  for (let i = 0; i < COUNT; i++) {
    const { history, status } = await engine.inspect(`w-${i}`);
    expect(status).toBe('completed');
    expect(history.map((e) => e.seq)).toEqual(history.map((_, k) => k + 1));
    expect(history.filter((e) => e.type === 'WorkflowCompleted' || e.type === 'WorkflowFailed')).toHaveLength(1);
    expect(history.filter((e) => e.type === 'WorkflowStarted')).toHaveLength(1);
    // Every scheduled activity completed exactly once in the history.
    const scheduled = history.filter((e) => e.type === 'ActivityScheduled').map((e) => (e as { commandId: number }).commandId);
    const completed = history.filter((e) => e.type === 'ActivityCompleted').map((e) => (e as { commandId: number }).commandId);
    expect(completed.sort()).toEqual(scheduled.sort());
  }
}

describe.each(backends)('crash recovery on $name', (backend) => {
  it(`finishes all ${COUNT} workflows of an engine killed with SIGKILL, each exactly once`, async () => {
    const dataDir = backend.name === 'pglite' ? await mkdtemp(path.join(tmpdir(), 'duraflow-crash-')) : undefined;
    const schema = `crash_${Date.now().toString(36)}`;
    // A short lease: on Postgres the new engine takes the names over once the killed one's expires.
    const env: Record<string, string> = { DURAFLOW_SCHEMA: schema, START_COUNT: String(COUNT), LEASE_TTL_MS: '2000' };
    if (dataDir) {
      env.DURAFLOW_DATA_DIR = dataDir;
      env.DATABASE_URL = '';
    }
    const child = spawnFixture('engine-process.js', env);
    try {
      // The child makes the embedded database first, seconds of CPU (a minute on a loaded machine).
      await child.line(/^started \d+/, dataDir ? 90_000 : undefined);
      // Kill once a quarter has finished: the rest are somewhere in between.
      await child.line(/^quarter done/);
      child.process.kill('SIGKILL');
      expect(await child.exited).toBeNull();

      const engine = await createEngine({
        ...(dataDir ? { dataDir } : { database: process.env.DATABASE_URL }),
        schema,
        workflows: { mixed, waitsForGo },
        activities: fixtureActivities,
        activityThreads: 2,
      });
      trackedEngines.add(engine);
      try {
        await checkAll(engine);
      } finally {
        trackedEngines.delete(engine);
        await engine.close();
      }
    } finally {
      child.process.kill('SIGKILL');
      if (dataDir) await rm(dataDir, { recursive: true, force: true });
      else {
        const pg = (await import('pg')).default;
        const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
        await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
        await pool.end();
      }
    }
  }, EMBEDDED_STARTS_TEST_MS);
});
