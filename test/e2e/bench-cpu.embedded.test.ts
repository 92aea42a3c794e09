import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { bench } from '../helpers/bench-harness.js';
import { EMBEDDED_STARTS_TEST_MS } from '../helpers/child-engine.js';
import { useTempDir } from '../helpers/temp-dir.js';

type Figures = Record<string, number | string | undefined>;

describe('the benchmark harness CPU figures', () => {
  const dir = useTempDir('duraflow-bench-cpu-');

  it('splits the engine process CPU per step by kind of thread, and the parts add up to the whole', async () => {
    const reportFile = join(dir.path, 'steps.json');
    const run = await bench(['--scenario', 'steps', '--workflows', '600', '--steps', '4', '--warm-up', '50', '--json', reportFile]);
    expect(run.stderr.includes('Error') ? run.stderr : '').toBe('');
    expect(run.code).toBe(0);
    const { medians } = JSON.parse(await readFile(reportFile, 'utf8')) as { medians: Figures[] };
    const figures = medians[0]!;
    for (const name of ['mainThreadCpuUsPerStep', 'v8BackgroundCpuUsPerStep', 'activityThreadsCpuUsPerStep', 'engineCpuUsPerStep']) {
      expect(run.stdout).toContain(name);
      expect(typeof figures[name], name).toBe('number');
    }
    const main = figures.mainThreadCpuUsPerStep as number;
    const parts = main + (figures.v8BackgroundCpuUsPerStep as number) + (figures.activityThreadsCpuUsPerStep as number);
    const whole = figures.engineCpuUsPerStep as number;
    // The embedded database runs on the main thread: its share is most of the work, never nothing.
    expect(main).toBeGreaterThan(0);
    // Threads are read in ticks of 10 ms, the whole exactly: they differ by less than a tick for each
    // thread (the process has about a dozen).
    const tickPerStepUs = 10_000 / (600 * 4);
    expect(Math.abs(parts - whole)).toBeLessThanOrEqual(16 * tickPerStepUs);
    expect(main).toBeLessThanOrEqual(whole + tickPerStepUs);
  }, EMBEDDED_STARTS_TEST_MS);
});
