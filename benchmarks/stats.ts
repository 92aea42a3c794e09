/** Small statistics helpers for the harness. */

/** The q-quantile (0..1) of `values` by linear interpolation; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

/** p50/p95/p99 of samples. */
export function percentiles(values: readonly number[]): { p50: number; p95: number; p99: number } {
  return { p50: quantile(values, 0.5), p95: quantile(values, 0.95), p99: quantile(values, 0.99) };
}

/** A quantile estimated from cumulative histogram buckets ({le, count}), as Prometheus does. */
export function histogramQuantile(buckets: readonly { le: number; count: number }[], q: number): number {
  const total = buckets.at(-1)?.count ?? 0;
  if (total === 0) return NaN;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const { le, count } of buckets) {
    if (count >= rank) {
      if (!Number.isFinite(le)) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / Math.max(1, count - prevCount);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/**
 * The percentage of observations at or below `bound`, exact when `bound` is a bucket's bound (the
 * bucket's cumulative count over the total); undefined when there are none, or no such bucket.
 */
export function shareWithin(buckets: readonly { le: number; count: number }[], bound: number): number | undefined {
  const total = buckets.at(-1)?.count ?? 0;
  const within = buckets.find((b) => b.le === bound);
  if (total === 0 || within === undefined) return undefined;
  return (100 * within.count) / total;
}

/**
 * Events per second between two quantiles of their times (epoch ms), by default the 10th and the
 * 90th: the pace of a run's middle, without its start (work not yet flowing through every stage)
 * or its end (the last workflows with nothing left to overlap with). Undefined for fewer than
 * two distinct times.
 */
export function middleRate(times: readonly number[], from = 0.1, to = 0.9): number | undefined {
  if (times.length < 2) return undefined;
  const ms = quantile(times, to) - quantile(times, from);
  return ms > 0 ? ((to - from) * times.length * 1000) / ms : undefined;
}

export function round(value: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
