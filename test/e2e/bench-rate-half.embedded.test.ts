import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { bench } from '../helpers/bench-harness.js';
import { EMBEDDED_STARTS_TEST_MS } from '../helpers/child-engine.js';
import { useTempDir } from '../helpers/temp-dir.js';

type Figures = Record<string, number | string | undefined>;

describe('the latency scenario at half the maximum', () => {
  const dir = useTempDir('duraflow-bench-half-');

  it('measures the maximum before each run and arrives at half its workflows per second', async () => {
    const reportFile = join(dir.path, 'half.json');
    const run = await bench([
      ...['--scenario', 'latency', '--rate', 'half', '--concurrency', '10', '--workflows', '20', '--steps', '2'],
      ...['--warm-up', '5', '--repeat', '2', '--json', reportFile],
    ]);
    expect(run.stderr.includes('Error') ? run.stderr : '').toBe('');
    expect(run.code).toBe(0);
    const { runs, medians } = JSON.parse(await readFile(reportFile, 'utf8')) as {
      runs: { duraflow: Figures[]; maximum: Figures[] };
      medians: Figures[];
    };
    expect(runs.maximum).toHaveLength(2);
    expect(runs.duraflow).toHaveLength(2);
    runs.maximum.forEach((maximum, i) => {
      // 4C workflows, C at a time: a steady mix, not a burst.
      expect(maximum).toMatchObject({ scenario: 'steps (maximum)', workflows: 40 });
      const latency = runs.duraflow[i]!;
      expect(latency.scenario).toBe('latency@half-of-maximum');
      expect(latency.workflows).toBe(20);
      // The warm-up arrives at the same rate, before the measured workflows.
      expect(latency.warmUpWorkflows).toBe(5);
      // Percentiles from the engine's histograms, in order, each from counts the run added.
      for (const [low, high] of [['stepP50Ms', 'stepP99Ms'], ['flushP50Ms', 'flushP99Ms']] as const) {
        expect(latency[low]).toBeGreaterThan(0);
        expect(latency[high]).toBeGreaterThanOrEqual(latency[low] as number);
      }
      expect(latency.maximumWorkflowsPerSec).toBe(maximum.workflowsPerSec);
      expect(latency.rate).toBeCloseTo((maximum.workflowsPerSec as number) / 2, 6);
    });
    expect(medians.map((m) => m.scenario)).toEqual(['latency@half-of-maximum', 'steps (maximum)']);
    expect(run.stdout).toContain('duraflow latency@half-of-maximum');
    expect(run.stdout).toContain('maximumWorkflowsPerSec');
  }, 2 * EMBEDDED_STARTS_TEST_MS);
});
