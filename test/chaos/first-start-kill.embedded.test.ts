/**
 * A first start in a new data directory killed (SIGKILL) midway: the next engine opens the
 * directory and runs workflows in it. Embedded database only, whatever DATABASE_URL says.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { ConfigurationError, createClient, createEngine, type WorkflowContext } from 'duraflow';

import { EMBEDDED_STARTS_TEST_MS, spawnFixture } from '../helpers/child-engine.js';
import { quietLogger } from '../helpers/engines.js';

/** Doubles `n` in an activity, after a durable sleep. */
async function twice(ctx: WorkflowContext, n: number): Promise<number> {
  await ctx.sleep(1);
  return ctx.activities<{ double(n: number): Promise<number> }>().double(n);
}

describe('a first start killed midway', () => {
  it.each([
    // What PGlite can never open again: a cluster with PG_VERSION and no configuration.
    { stopAt: 'cluster', left: { 'PG_VERSION': true, 'postgresql.conf': false } },
    { stopAt: 'migrations', left: { 'PG_VERSION': true, 'postgresql.conf': true } },
  ])('at $stopAt leaves a directory the next engine makes the database in again and runs workflows', async ({ stopAt, left }) => {
    const dir = await mkdtemp(path.join(tmpdir(), 'duraflow-first-'));
    const dataDir = path.join(dir, 'db');
    const child = spawnFixture('first-start.js', { DURAFLOW_DATA_DIR: dataDir, STOP_AT: stopAt });
    try {
      await child.line(/^midpoint$/, 90_000);
      child.process.kill('SIGKILL');
      expect(await child.exited).toBe(null);
      for (const [file, isThere] of Object.entries(left)) expect(existsSync(path.join(dataDir, file)), file).toBe(isThere);
      expect(existsSync(path.join(dataDir, 'duraflow.creating'))).toBe(true);

      // Half made is no database: a reader that creates none says so.
      const reader = createClient({ dataDir, logger: quietLogger, migrate: false });
      await expect(reader).rejects.toBeInstanceOf(ConfigurationError);
      await expect(reader).rejects.toThrow(`no embedded database in ${JSON.stringify(dataDir)}`);

      const engine = await createEngine({ dataDir, logger: quietLogger, workflows: { twice }, inlineActivities: { double: async (n: number) => 2 * n } });
      try {
        expect(existsSync(path.join(dataDir, 'duraflow.creating'))).toBe(false);
        const handle = await engine.startWorkflow(twice, 21, { workflowId: 'after-the-kill' });
        expect(await handle.result()).toBe(42);
      } finally {
        await engine.close();
      }
      const client = await createClient({ dataDir, logger: quietLogger, migrate: false });
      try {
        expect(await client.result('after-the-kill')).toBe(42);
      } finally {
        await client.close();
      }
    } finally {
      child.process.kill('SIGKILL');
      await child.exited;
      await rm(dir, { recursive: true, force: true });
    }
  }, EMBEDDED_STARTS_TEST_MS);
});
