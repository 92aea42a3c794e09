import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const execute = promisify(execFile);
const client = new URL('../../dist/examples/subscription/client.js', import.meta.url).pathname;

describe('the subscription example client', () => {
  let cwd: string;
  beforeEach(async () => {
    cwd = await mkdtemp(path.join(tmpdir(), 'duraflow-example-client-'));
  });
  afterEach(async () => {
    await rm(cwd, { recursive: true, force: true });
  });

  // The workflow splits the total into that many payments: 2.5 cycles ran a third payment of
  // NaN and ended with paid null.
  it('refuses a number of cycles that is not whole, before opening any database', async () => {
    const env = { ...process.env };
    delete env.DATABASE_URL;
    const run = await execute(process.execPath, [client, 'schedule', 'sub-frac', '1000', '2.5'], { cwd, env }).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => error,
    );
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('cycles must be a whole number');
    expect(existsSync(path.join(cwd, '.duraflow'))).toBe(false);
  });
});
