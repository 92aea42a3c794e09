import type { ActivityOptions, RetryPolicy } from '../actors/commands.js';
import type { SerializedFailure } from '../actors/history.js';
import { shownValue } from '../actors/shown-value.js';
import { LATEST_TIME_MS } from '../storage/rows.js';
import { checkKnownKeys } from './validate.js';

export type { ActivityOptions, RetryPolicy };

/** A policy with every field set; Required<> would leave a caller with exactOptionalPropertyTypes each field's undefined. */
export type ResolvedRetryPolicy = { [K in keyof RetryPolicy]-?: Exclude<RetryPolicy[K], undefined> };

/** Retry until success, 1 s doubling to at most 60 s between attempts: the seed's behaviour. */
export const DEFAULT_RETRY_POLICY: ResolvedRetryPolicy = Object.freeze({
  maxAttempts: Infinity,
  initialIntervalMs: 1_000,
  backoffCoefficient: 2,
  maxIntervalMs: 60_000,
  nonRetryable: [],
});

const RETRY_POLICY_KEYS = ['maxAttempts', 'initialIntervalMs', 'backoffCoefficient', 'maxIntervalMs', 'nonRetryable'];

/** Throws a RangeError or TypeError naming the first bad field of `policy`. */
export function checkRetryPolicy(policy: unknown, where: string): RetryPolicy {
  if (policy === undefined) return {};
  if (typeof policy !== 'object' || policy === null || Array.isArray(policy)) {
    throw new TypeError(`${where} must be an object`);
  }
  checkKnownKeys(policy, RETRY_POLICY_KEYS, where, (message) => new TypeError(message));
  const p = policy as Record<string, unknown>;
  const positive = (key: string, min: number): void => {
    const v = p[key];
    if (v === undefined || (key === 'maxAttempts' && v === Infinity)) return;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min) {
      throw new RangeError(`${where}.${key} must be a finite number >= ${min}, got ${shownValue(v)}`);
    }
  };
  positive('maxAttempts', 1);
  // Attempts are counted whole: 2.5 would let a third run after the second.
  if (typeof p.maxAttempts === 'number' && p.maxAttempts !== Infinity && !Number.isInteger(p.maxAttempts)) {
    throw new RangeError(`${where}.maxAttempts must be a whole number (or Infinity), got ${p.maxAttempts}`);
  }
  positive('initialIntervalMs', 0);
  positive('backoffCoefficient', 1);
  positive('maxIntervalMs', 0);
  if (p.nonRetryable !== undefined) {
    if (!Array.isArray(p.nonRetryable) || !p.nonRetryable.every((n) => typeof n === 'string')) {
      throw new TypeError(`${where}.nonRetryable must be an array of error names`);
    }
  }
  return p as RetryPolicy;
}

/** `override` field by field over `base`. */
export function resolveRetryPolicy(base: ResolvedRetryPolicy, override: RetryPolicy | undefined): ResolvedRetryPolicy {
  if (!override) return base;
  return {
    maxAttempts: override.maxAttempts ?? base.maxAttempts,
    initialIntervalMs: override.initialIntervalMs ?? base.initialIntervalMs,
    backoffCoefficient: override.backoffCoefficient ?? base.backoffCoefficient,
    maxIntervalMs: override.maxIntervalMs ?? base.maxIntervalMs,
    nonRetryable: override.nonRetryable ?? base.nonRetryable,
  };
}

/** Delay after the `attempt`-th failure: initial × coefficient^(attempt−1), capped. */
export function backoffMs(policy: ResolvedRetryPolicy, attempt: number): number {
  // 0 × a coefficient grown to Infinity is NaN, a time no flush can store: no delay stays none.
  if (policy.initialIntervalMs === 0) return 0;
  return Math.min(policy.initialIntervalMs * policy.backoffCoefficient ** (attempt - 1), policy.maxIntervalMs);
}

/**
 * When the next attempt runs (epoch ms) after attempt number `attempt` failed with `failure`, or
 * undefined if the activity has failed for good. `requestedAt` is the activity's own
 * `ctx.retryAfter`/`retryAt` override, which wins over the backoff (but not over maxAttempts).
 */
export function nextAttemptAt(
  policy: ResolvedRetryPolicy,
  attempt: number,
  failure: SerializedFailure,
  now: number,
  requestedAt?: number,
): number | undefined {
  if (failure.nonRetryable || policy.nonRetryable.includes(failure.name)) return undefined;
  if (attempt >= policy.maxAttempts) return undefined;
  const next = requestedAt === undefined ? now + backoffMs(policy, attempt) : Math.max(requestedAt, now);
  // Past the range of a Date no flush could store it, and every flush with it would fail.
  return Math.min(next, LATEST_TIME_MS);
}

/** Parses the options stored with a task. */
export function parseActivityOptions(json: string): ActivityOptions {
  return JSON.parse(json) as ActivityOptions;
}
