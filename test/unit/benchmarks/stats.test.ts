import { describe, expect, it } from 'vitest';

import { histogramQuantile, middleRate, shareWithin } from '../../../benchmarks/stats.js';

// 1,000 observations: 900 at or below 5 ms, 985 at or below 10 ms, all at or below 25 ms.
const buckets = [
  { le: 0.005, count: 900 },
  { le: 0.01, count: 985 },
  { le: 0.025, count: 1000 },
  { le: Infinity, count: 1000 },
];

describe('shareWithin', () => {
  it('reads the exact share at a bucket bound where the interpolated p99 can only say which bucket', () => {
    expect(shareWithin(buckets, 0.01)).toBe(98.5);
    // The p99 falls in the 10-25 ms bucket; where in it is a guess.
    expect(histogramQuantile(buckets, 0.99)).toBeCloseTo(0.015, 6);
    expect(shareWithin(buckets, 0.005)).toBe(90);
  });

  it('has no answer for a bound that is not a bucket, or for no observations', () => {
    expect(shareWithin(buckets, 0.02)).toBeUndefined();
    expect(shareWithin(buckets.map((b) => ({ ...b, count: 0 })), 0.01)).toBeUndefined();
  });
});

describe('middleRate', () => {
  it('reads the pace between the 10th and 90th percentile of the times, leaving out a slow start and end', () => {
    // 1,000 events a second for a second, after 100 events spread over the first half second
    // and before 100 spread over the last half second.
    const start = Array.from({ length: 100 }, (_, i) => i * 5);
    const middle = Array.from({ length: 1000 }, (_, i) => 500 + i);
    const end = Array.from({ length: 100 }, (_, i) => 1500 + i * 5);
    const times = [...end, ...middle, ...start]; // in any order
    const rate = middleRate(times)!;
    expect(rate).toBeGreaterThan(950);
    expect(rate).toBeLessThan(1050);
    // The whole run's average is far lower: 1,200 events in 2 s.
    expect(middleRate(times, 0, 1)).toBeCloseTo(600, -1);
  });

  it('has no answer for fewer than two distinct times', () => {
    expect(middleRate([])).toBeUndefined();
    expect(middleRate([5])).toBeUndefined();
    expect(middleRate([5, 5, 5])).toBeUndefined();
  });
});
