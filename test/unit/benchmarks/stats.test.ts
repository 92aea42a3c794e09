import { describe, expect, it } from 'vitest';

import { histogramQuantile, shareWithin } from '../../../benchmarks/stats.js';

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
