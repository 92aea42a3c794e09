import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createEngine } from 'duraflow';

import { waitsForGo } from '../fixtures/workflows.js';
import { quietLogger } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

const execute = promisify(execFile);
const cli = new URL('../../dist/bin/duraflow.js', import.meta.url).pathname;

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI without DATABASE_URL, so only its flags say where to read. */
async function run(args: string[]): Promise<Ran> {
  const env = { ...process.env };
  delete env.DATABASE_URL;
  return execute(process.execPath, [cli, ...args], { env }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: Ran) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );
}

describe('the CLI flags', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'duraflow-cli-flags-'));
    const engine = await createEngine({ dataDir, workflows: { waitsForGo }, logger: quietLogger });
    try {
      await engine.startWorkflow(waitsForGo, { label: 'flags' }, { workflowId: 'cli-flags' });
      await waitFor(async () => (await engine.inspect('cli-flags')).vars.stage === 'waiting', 'the wait');
    } finally {
      await engine.close();
    }
  });
  afterAll(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it('reads the workflow with well-formed flags', async () => {
    const shown = await run(['inspect', 'cli-flags', '--data-dir', dataDir]);
    expect(shown.code).toBe(0);
    expect(JSON.parse(shown.stdout)).toMatchObject({ workflowId: 'cli-flags', status: 'running' });
  });

  it('refuses an empty --schema rather than reading the default schema', async () => {
    const shown = await run(['inspect', 'cli-flags', '--data-dir', dataDir, '--schema', '']);
    expect(shown).toMatchObject({ code: 1, stdout: '', stderr: expect.stringContaining('options.schema') });
  });

  it('refuses an empty --database or --data-dir rather than reading another database', async () => {
    const noDatabase = await run(['inspect', 'cli-flags', '--database', '']);
    expect(noDatabase).toMatchObject({ code: 1, stderr: expect.stringContaining('options.database') });
    const noDataDir = await run(['inspect', 'cli-flags', '--data-dir', '']);
    expect(noDataDir).toMatchObject({ code: 1, stderr: expect.stringContaining('options.dataDir') });
  });
});

describe('the CLI usage errors', () => {
  it('exits with 2 and the usage for an unknown flag or a flag without its value', async () => {
    for (const args of [['inspect', 'x', '--schem', 'a'], ['leases', '--schema'], ['inspect', 'x', '--verbose']]) {
      const shown = await run(args);
      expect(shown, args.join(' ')).toMatchObject({ code: 2, stdout: '', stderr: expect.stringContaining('usage: duraflow inspect') });
    }
  });

  it('exits with 2 when given both --database and --data-dir, instead of ignoring one', async () => {
    const shown = await run(['leases', '--database', 'postgres://127.0.0.1:1/x', '--data-dir', tmpdir()]);
    expect(shown).toMatchObject({ code: 2, stdout: '', stderr: expect.stringContaining('usage: duraflow inspect') });
  });

  it('prints the usage asked for with --help on stdout and exits with 0', async () => {
    const shown = await run(['--help']);
    expect(shown).toMatchObject({ code: 0, stdout: expect.stringContaining('usage: duraflow inspect') });
  });
});
