import { describe, expect, it } from 'vitest';

import type { SerializedFailure } from '../../../actors/history.js';
import {
  backoffMs,
  checkRetryPolicy,
  DEFAULT_RETRY_POLICY,
  nextAttemptAt,
  parseActivityOptions,
  type ResolvedRetryPolicy,
  resolveRetryPolicy,
} from '../../../engine/retry-policy.js';
import { thrown } from '../../helpers/builders.js';

const failure: SerializedFailure = { name: 'Error', message: 'flaky' };
const NOW = 1_000_000;

function policy(overrides: Partial<ResolvedRetryPolicy> = {}): ResolvedRetryPolicy {
  return { ...DEFAULT_RETRY_POLICY, ...overrides };
}

describe('checkRetryPolicy', () => {
  it('accepts undefined as no overrides', () => {
    expect(checkRetryPolicy(undefined, 'retry')).toEqual({});
  });

  it('accepts a full valid policy as is', () => {
    const p = { maxAttempts: 3, initialIntervalMs: 0, backoffCoefficient: 1, maxIntervalMs: 0, nonRetryable: ['E'] };
    expect(checkRetryPolicy(p, 'retry')).toEqual(p);
    expect(checkRetryPolicy({ maxAttempts: Infinity }, 'retry')).toEqual({ maxAttempts: Infinity });
  });

  it.each([null, 3, 'x', true])('refuses the non-object %j with a TypeError', (value) => {
    const error = thrown(() => checkRetryPolicy(value, 'opts.retry'));
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toContain('opts.retry');
  });

  it.each([
    ['maxAttempts', 0],
    ['maxAttempts', -Infinity],
    ['maxAttempts', '3'],
    // Attempts are whole: 2.5 would allow a third attempt after the second.
    ['maxAttempts', 2.5],
    ['initialIntervalMs', -1],
    ['initialIntervalMs', Infinity],
    ['initialIntervalMs', Number.NaN],
    ['backoffCoefficient', 0.5],
    ['backoffCoefficient', Infinity],
    ['maxIntervalMs', -0.1],
    ['maxIntervalMs', null],
  ])('refuses %s = %j with a RangeError naming the field', (field, value) => {
    const error = thrown(() => checkRetryPolicy({ [field]: value }, 'opts.retry'));
    expect(error).toBeInstanceOf(RangeError);
    expect(error.message).toContain(`opts.retry.${field}`);
  });

  it('shows a number given as a string as the string it is, not as a number that would pass', () => {
    expect(thrown(() => checkRetryPolicy({ initialIntervalMs: '500' }, 'opts.retry')).message).toBe(
      'opts.retry.initialIntervalMs must be a finite number >= 0, got the string "500"',
    );
  });

  it.each([['NotAnArray'], [[1, 2]], [['ok', 3]]])('refuses nonRetryable = %j with a TypeError', (value) => {
    const error = thrown(() => checkRetryPolicy({ nonRetryable: value }, 'opts.retry'));
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toContain('opts.retry.nonRetryable');
  });
});

describe('resolveRetryPolicy', () => {
  it('returns the base when there is no override', () => {
    expect(resolveRetryPolicy(DEFAULT_RETRY_POLICY, undefined)).toBe(DEFAULT_RETRY_POLICY);
  });

  it('overrides field by field', () => {
    const base = policy({ nonRetryable: ['A'] });
    expect(resolveRetryPolicy(base, { maxAttempts: 5 })).toEqual({ ...base, maxAttempts: 5 });
    expect(resolveRetryPolicy(base, { initialIntervalMs: 10, nonRetryable: [] })).toEqual({
      ...base,
      initialIntervalMs: 10,
      nonRetryable: [],
    });
    expect(resolveRetryPolicy(base, { backoffCoefficient: 3, maxIntervalMs: 7 })).toEqual({
      ...base,
      backoffCoefficient: 3,
      maxIntervalMs: 7,
    });
  });

  it('keeps explicit zeros rather than falling back to the base', () => {
    expect(resolveRetryPolicy(DEFAULT_RETRY_POLICY, { initialIntervalMs: 0, maxIntervalMs: 0 })).toMatchObject({
      initialIntervalMs: 0,
      maxIntervalMs: 0,
    });
  });
});

describe('backoffMs', () => {
  it('grows by the coefficient from the initial interval', () => {
    const p = policy({ initialIntervalMs: 100, backoffCoefficient: 3, maxIntervalMs: 1e9 });
    expect([1, 2, 3, 4].map((n) => backoffMs(p, n))).toEqual([100, 300, 900, 2_700]);
  });

  it('is capped by maxIntervalMs, also when the power overflows', () => {
    expect([1, 2, 6, 7, 8].map((n) => backoffMs(DEFAULT_RETRY_POLICY, n))).toEqual([
      1_000, 2_000, 32_000, 60_000, 60_000,
    ]);
    expect(backoffMs(DEFAULT_RETRY_POLICY, 5_000)).toBe(60_000);
    expect(backoffMs(policy({ initialIntervalMs: 5_000, maxIntervalMs: 1_000 }), 1)).toBe(1_000);
  });
});

describe('nextAttemptAt', () => {
  it('stays a time a flush can store, however many attempts and whatever the intervals', () => {
    const now = NOW;
    // 0 × 2^1024 (Infinity) is NaN: no interval stays no interval.
    const immediate = resolveRetryPolicy(DEFAULT_RETRY_POLICY, { initialIntervalMs: 0, maxAttempts: Infinity });
    expect(nextAttemptAt(immediate, 1_025, failure, now)).toBe(now);
    // An interval past the range of a Date waits until its end.
    const huge = resolveRetryPolicy(DEFAULT_RETRY_POLICY, { initialIntervalMs: 1e16, maxIntervalMs: 1e16 });
    expect(nextAttemptAt(huge, 1, failure, now)).toBe(8.64e15);
  });

  it('schedules the next attempt after the backoff', () => {
    expect(nextAttemptAt(DEFAULT_RETRY_POLICY, 1, failure, NOW)).toBe(NOW + 1_000);
    expect(nextAttemptAt(DEFAULT_RETRY_POLICY, 3, failure, NOW)).toBe(NOW + 4_000);
  });

  it('retries forever under the default policy', () => {
    expect(nextAttemptAt(DEFAULT_RETRY_POLICY, 1_000_000, failure, NOW)).toBe(NOW + 60_000);
  });

  it('gives up after maxAttempts attempts', () => {
    const p = policy({ maxAttempts: 3 });
    expect(nextAttemptAt(p, 2, failure, NOW)).toBe(NOW + 2_000);
    expect(nextAttemptAt(p, 3, failure, NOW)).toBeUndefined();
    expect(nextAttemptAt(policy({ maxAttempts: 1 }), 1, failure, NOW)).toBeUndefined();
  });

  it('gives up at once on a failure marked nonRetryable', () => {
    expect(nextAttemptAt(DEFAULT_RETRY_POLICY, 1, { ...failure, nonRetryable: true }, NOW)).toBeUndefined();
    expect(nextAttemptAt(DEFAULT_RETRY_POLICY, 1, { ...failure, nonRetryable: false }, NOW)).toBe(NOW + 1_000);
  });

  it('gives up at once on an error name the policy lists', () => {
    const p = policy({ nonRetryable: ['ValidationError'] });
    expect(nextAttemptAt(p, 1, { name: 'ValidationError', message: 'no' }, NOW)).toBeUndefined();
    expect(nextAttemptAt(p, 1, { name: 'OtherError', message: 'no' }, NOW)).toBe(NOW + 1_000);
  });

  it("uses the activity's requested time over the backoff (a time already past as now), but not over maxAttempts", () => {
    expect(nextAttemptAt(DEFAULT_RETRY_POLICY, 1, failure, NOW, NOW + 5)).toBe(NOW + 5);
    expect(nextAttemptAt(DEFAULT_RETRY_POLICY, 1, failure, NOW, 0)).toBe(NOW);
    expect(nextAttemptAt(DEFAULT_RETRY_POLICY, 1, failure, NOW, -1e15)).toBe(NOW);
    expect(nextAttemptAt(policy({ maxAttempts: 2 }), 2, failure, NOW, NOW + 5)).toBeUndefined();
    expect(nextAttemptAt(DEFAULT_RETRY_POLICY, 1, { ...failure, nonRetryable: true }, NOW, NOW + 5)).toBeUndefined();
  });
});

describe('parseActivityOptions', () => {
  it('reads the stored JSON back', () => {
    expect(parseActivityOptions('{"retry":{"maxAttempts":2},"startToCloseTimeoutMs":5}')).toEqual({
      retry: { maxAttempts: 2 },
      startToCloseTimeoutMs: 5,
    });
  });
});
