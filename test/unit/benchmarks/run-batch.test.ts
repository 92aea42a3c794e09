import { describe, expect, it } from 'vitest';

import type { Engine } from 'duraflow';

import { runBatch } from '../../../benchmarks/scenarios.js';

/** A start whose workflow ends a turn of the event loop later, counting how many run at once. */
function countingStarts(): { start: (i: number) => ReturnType<Engine['startWorkflow']>; started: number[]; mostAtOnce: () => number } {
  const started: number[] = [];
  let running = 0;
  let most = 0;
  const start = async (i: number) => {
    started.push(i);
    most = Math.max(most, ++running);
    return {
      result: () =>
        new Promise<void>((resolve) =>
          setImmediate(() => {
            running--;
            resolve();
          }),
        ),
    };
  };
  return { start: start as unknown as (i: number) => ReturnType<Engine['startWorkflow']>, started, mostAtOnce: () => most };
}

describe('runBatch', () => {
  it('starts them all at once by default', async () => {
    const { start, started, mostAtOnce } = countingStarts();
    const { latencies } = await runBatch(50, start);
    expect(mostAtOnce()).toBe(50);
    expect(started).toHaveLength(50);
    expect(latencies.filter((ms) => ms >= 0)).toHaveLength(50);
  });

  it('keeps at most the concurrency running, replacing each that ends, until every one has run once', async () => {
    const { start, started, mostAtOnce } = countingStarts();
    const { latencies } = await runBatch(50, start, undefined, 7);
    expect(mostAtOnce()).toBe(7);
    expect([...started].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(latencies.filter((ms) => ms >= 0)).toHaveLength(50);
  });
});
