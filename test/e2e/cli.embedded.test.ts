import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createEngine, type WorkflowContext } from 'duraflow';

import { waitsForGo } from '../fixtures/workflows.js';
import { runCli as run, runCliThroughPipe } from '../helpers/cli.js';
import { quietLogger } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

/** Keeps a variable larger than a pipe takes in one write, so the CLI's output must be drained. */
async function holdsBigVar(ctx: WorkflowContext): Promise<unknown> {
  ctx.setVar('blob', 'x'.repeat(300_000));
  return ctx.waitForEvent('go');
}

describe('the CLI flags', () => {
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'duraflow-cli-flags-'));
    const engine = await createEngine({ dataDir, workflows: { waitsForGo, holdsBigVar }, logger: quietLogger });
    try {
      await engine.startWorkflow(waitsForGo, { label: 'flags' }, { workflowId: 'cli-flags' });
      await engine.startWorkflow(holdsBigVar, undefined, { workflowId: 'cli-big' });
      await waitFor(async () => (await engine.inspect('cli-flags')).vars.stage === 'waiting', 'the wait');
      await waitFor(async () => (await engine.inspect('cli-big')).vars.blob !== undefined, 'the big variable');
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
    expect(JSON.parse(shown.stdout)).toMatchObject({ vars: { label: 'flags', stage: 'waiting' } });
  });

  it('writes all of a large state to a pipe before it exits', async () => {
    const shown = await runCliThroughPipe(['inspect', 'cli-big', '--data-dir', dataDir]);
    expect(shown.code).toBe(0);
    expect(shown.stdout.length, 'characters on stdout').toBeGreaterThan(300_000);
    expect(JSON.parse(shown.stdout)).toMatchObject({ workflowId: 'cli-big', vars: { blob: 'x'.repeat(300_000) } });
  });

  it('exits with 3 for a workflow the data directory does not hold', async () => {
    const missing = await run(['inspect', 'nope', '--data-dir', dataDir]);
    expect(missing).toMatchObject({ code: 3, stderr: expect.stringMatching(/no workflow with id "nope"/) });
  });

  it('refuses a data directory with no database in it, and does not make one', async () => {
    const empty = path.join(dataDir, 'mistyped');
    const noDatabase = await run(['inspect', 'cli-flags', '--data-dir', empty]);
    expect(noDatabase).toMatchObject({ code: 1, stderr: expect.stringContaining(`no embedded database in ${JSON.stringify(empty)}`) });
    expect(existsSync(empty)).toBe(false);
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

  it('exits with 2 and says what is wrong for a missing or unknown command, a missing id or an extra argument', async () => {
    const cases: [string[], string][] = [
      [[], 'duraflow: no command given'],
      [['help'], 'duraflow: unknown command "help"'],
      [['inspect'], 'duraflow: inspect needs a workflow id'],
      [['inspect', 'a', 'b'], 'duraflow: unexpected argument "b"'],
      [['leases', 'x'], 'duraflow: unexpected argument "x"'],
    ];
    for (const [args, said] of cases) {
      const shown = await run(args);
      expect(shown, args.join(' ')).toMatchObject({ code: 2, stdout: '', stderr: expect.stringContaining(said) });
      expect(shown.stderr, args.join(' ')).toContain('usage: duraflow inspect');
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
