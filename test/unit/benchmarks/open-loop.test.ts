import { describe, expect, it } from 'vitest';

import { openLoop } from '../../../benchmarks/scenarios.js';

describe('openLoop', () => {
  it('begins measuring just before the first measured arrival and times only the measured ones', async () => {
    const total = 3 + 5;
    let arrived = 0;
    let arrivedAtBegin: number | undefined;
    let measured = 0;
    // No run ends before the last has arrived: an arrival that waited for an earlier run to end
    // would never come, and the loop would not finish.
    let endAll!: () => void;
    const allArrived = new Promise<void>((resolve) => (endAll = resolve));
    const run = async (): Promise<void> => {
      if (++arrived === total) endAll();
      await allArrived;
    };
    const { latencies } = await openLoop(
      { rate: 1000, warmUp: 3, count: 5 },
      run,
      async () => {
        arrivedAtBegin = arrived;
      },
      () => measured++,
    );
    expect(arrived).toBe(total);
    expect(arrivedAtBegin).toBe(3);
    expect(measured).toBe(5);
    expect(latencies).toHaveLength(5);
    for (const ms of latencies) expect(ms).toBeGreaterThanOrEqual(0);
  });

  it('measures from the first arrival when there is no warm-up', async () => {
    let arrived = 0;
    let arrivedAtBegin: number | undefined;
    const { latencies } = await openLoop(
      { rate: 1000, warmUp: 0, count: 4 },
      async () => {
        arrived++;
      },
      async () => {
        arrivedAtBegin = arrived;
      },
    );
    expect(arrivedAtBegin).toBe(0);
    expect(latencies).toHaveLength(4);
  });
});
