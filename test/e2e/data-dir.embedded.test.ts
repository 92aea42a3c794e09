import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { PGlite } from '@electric-sql/pglite';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { ConfigurationError, createClient, createEngine, type WorkflowContext } from 'duraflow';

import { waitsForGo } from '../fixtures/workflows.js';
import { EMBEDDED_STARTS_TEST_MS } from '../helpers/child-engine.js';
import { runCli } from '../helpers/cli.js';
import { quietLogger, readMetric, trackedEngines } from '../helpers/engines.js';

// The embedded database belongs to one process: these tests run on it whatever DATABASE_URL says.

async function idle(ctx: WorkflowContext): Promise<unknown> {
  return ctx.waitForEvent('never');
}

/** Tells which engine ran it: each engine's inline `whoAmI` answers with its own name. */
async function tagged(ctx: WorkflowContext, _input: null): Promise<string> {
  return ctx.activities<{ whoAmI(): Promise<string> }>().whoAmI();
}

// Each test's own folder, holding its data directory or the files it tries as one.
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'duraflow-dir-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the embedded database directory', () => {
  it('opens with migrate off only where a database is, by path or file:// URL, creating none', async () => {
    const dataDir = path.join(dir, 'db');
    const absent = createClient({ dataDir, logger: quietLogger, migrate: false });
    await expect(absent).rejects.toBeInstanceOf(ConfigurationError);
    await expect(absent).rejects.toThrow(`no embedded database in ${JSON.stringify(dataDir)}`);
    expect(existsSync(dataDir)).toBe(false);
    await (await createClient({ dataDir, logger: quietLogger })).close();
    await (await createClient({ dataDir: `file://${dataDir}`, logger: quietLogger, migrate: false })).close();
  });

  it('refuses with ConfigurationError a path that is a file or a directory without a whole database, and keeps no lock', async () => {
    const file = path.join(dir, 'a-file');
    const broken = path.join(dir, 'broken');
    await writeFile(file, 'not a directory');
    await mkdir(broken);
    // What another program, or a first start killed while PGlite made the database, leaves.
    await writeFile(path.join(broken, 'PG_VERSION'), '17\n');
    for (const dataDir of [file, path.join(file, 'db'), broken]) {
      for (const open of [
        () => createEngine({ dataDir, logger: quietLogger, workflows: { idle } }),
        () => createClient({ dataDir, logger: quietLogger }),
      ]) {
        const error = await open().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error, dataDir).toBeInstanceOf(ConfigurationError);
        expect(error, dataDir).toMatchObject({ message: expect.stringContaining(JSON.stringify(dataDir)), cause: expect.any(Error) });
      }
    }
    expect(existsSync(path.join(broken, 'duraflow.lock'))).toBe(false);
  });

  it('belongs to one process at a time: a second opener is refused, a dead holder is taken over', async () => {
    const dataDir = path.join(dir, 'db');
    const lockFile = path.join(dataDir, 'duraflow.lock');
    const openAndClose = async (): Promise<void> => (await createClient({ dataDir, logger: quietLogger })).close();
    const engine = await createEngine({ workflows: { idle }, dataDir, logger: quietLogger });
    try {
      // A second handle would not see the first one's writes, and would overwrite them on close.
      const second = createClient({ dataDir: `${dataDir}/`, logger: quietLogger });
      await expect(second).rejects.toBeInstanceOf(ConfigurationError);
      await expect(second).rejects.toThrow(`open in process ${process.pid} (this one)`);
    } finally {
      await engine.close();
    }
    expect(existsSync(lockFile)).toBe(false);
    // A late second close releases nothing of the next holder's.
    const next = await createClient({ dataDir, logger: quietLogger });
    await engine.close();
    expect(existsSync(lockFile)).toBe(true);
    await next.close();
    // Locks a holder left behind: a process that died, an earlier process with this pid (a
    // container's pid 1 restarting), a process from before a reboot.
    const dead = Number(spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' }).stdout.trim());
    const leftBehind = [
      { pid: dead },
      { pid: process.pid },
      { pid: process.pid, start: '1' },
      { pid: 1, boot: 'an-earlier-boot' },
      'not a lock',
    ];
    for (const left of leftBehind) {
      await writeFile(lockFile, typeof left === 'string' ? left : JSON.stringify(left));
      await openAndClose();
      expect(existsSync(lockFile)).toBe(false);
    }
  }, EMBEDDED_STARTS_TEST_MS);
});

describe('another process on the embedded database', () => {
  it('is refused, naming this process, while an engine here holds the data directory, and opens it once released', async () => {
    const dataDir = path.join(dir, 'db');
    const engine = await createEngine({ dataDir, workflows: { waitsForGo }, logger: quietLogger });
    try {
      const refused = await runCli(['inspect', 'any', '--data-dir', dataDir]);
      expect(refused).toMatchObject({ code: 1, stderr: expect.stringContaining(`is open in process ${process.pid};`) });
    } finally {
      await engine.close();
    }
    // Released: the other process opens it and finds no such workflow.
    expect(await runCli(['inspect', 'any', '--data-dir', dataDir])).toMatchObject({ code: 3 });
  }, EMBEDDED_STARTS_TEST_MS);
});

describe('an engine on the embedded database in a data directory', () => {
  it('takes its leases at once, whatever an earlier holder left: no other process can open the directory', async () => {
    const dataDir = path.join(dir, 'db');
    const open = (name: string) =>
      createEngine({ dataDir, workflows: { tagged }, inlineActivities: { whoAmI: async () => name }, logger: quietLogger });
    await (await open('first')).close();
    // As a process killed while holding them would leave them: unexpired, someone else's.
    const db = new PGlite(dataDir);
    await db.query(`UPDATE duraflow.leases SET owner = 'killed', expires_at = now() + interval '1 hour'`);
    await db.close();
    const engine = await open('second');
    trackedEngines.add(engine);
    try {
      expect(await readMetric(engine, 'duraflow_leases_held')).toBe(1);
      expect(await (await engine.startWorkflow(tagged, null)).result()).toBe('second');
    } finally {
      trackedEngines.delete(engine);
      await engine.close();
    }
  }, EMBEDDED_STARTS_TEST_MS);
});
