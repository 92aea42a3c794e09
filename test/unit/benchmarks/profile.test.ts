import { describe, expect, it } from 'vitest';

import { startCpuProfile, summarizeProfile } from '../../../benchmarks/profile.js';

/** Work that takes the thread for `ms`, in a function the profile can name. */
function spinsTheThread(ms: number): number {
  let x = 0;
  const until = performance.now() + ms;
  // The clock is read rarely: its time would be Node's, not this function's.
  do for (let i = 0; i < 100_000; i++) x = (x * 31 + i) % 1_000_003;
  while (performance.now() < until);
  return x;
}

describe('the benchmark profile summary', () => {
  it('names the function and the file that took the thread, with shares of the sampled time', async () => {
    const profiler = await startCpuProfile();
    // Long beside the profile's edges: its first sample is taken inside the call that starts it and
    // is charged the time to the sampler thread's next tick, up to 190 ms on a loaded machine (a
    // 300 ms spin was then 46% of the sampled time).
    spinsTheThread(1_500);
    const summary = summarizeProfile(await profiler.stop());

    expect(summary.sampledMs).toBeGreaterThan(1_000);
    const spinning = summary.functions.find((f) => f.function.startsWith('spinsTheThread '));
    expect(spinning?.function).toContain('test/unit/benchmarks/profile.test.ts:');
    expect(spinning!.pct).toBeGreaterThan(50);
    expect(summary.files[0]).toEqual({ file: 'test/unit/benchmarks/profile.test.ts', pct: expect.any(Number) as number });
    const listed = summary.files.reduce((sum, f) => sum + f.pct, 0);
    expect(listed + summary.garbageCollectorPct + summary.idlePct + summary.programPct).toBeLessThanOrEqual(100.5);
  });

  it('sums nothing for a profile without samples', () => {
    const summary = summarizeProfile({
      nodes: [{ id: 1, callFrame: { functionName: '(root)', url: '', lineNumber: -1 } }],
      startTime: 0,
      endTime: 0,
    });
    expect(summary).toEqual({ sampledMs: 0, garbageCollectorPct: 0, idlePct: 0, programPct: 0, functions: [], files: [] });
  });
});
