import type { Codec } from '../actors/actor-host.js';
import { InvalidArgumentError, PayloadTooLargeError } from './errors.js';
import { checkRetryPolicy } from './retry-policy.js';
import { MAX_DELAY_MS } from './timer-service.js';
import { checkKnownKeys, checkName } from './validate.js';

/** What JSON would turn into `{}` or an object of indices, losing what it holds. */
function lossyKind(value: object): string | undefined {
  // Arrays are the common objects inside payloads, and never lossy.
  if (Array.isArray(value)) return undefined;
  if (value instanceof Map) return 'Map';
  if (value instanceof Set) return 'Set';
  if (value instanceof WeakMap || value instanceof WeakSet) return 'WeakMap or WeakSet';
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer || value instanceof SharedArrayBuffer) return 'binary buffer';
  // An await left out (`return [pay(a), pay(b)]`): the value it stands for would be lost.
  if (value instanceof Promise) return 'Promise';
  return undefined;
}

/** Where in a value the replacer is, for its errors. */
function placeOf(key: string): string {
  return key === '' ? 'the top level' : `key ${JSON.stringify(key)}`;
}

// Called for every value a payload holds: nothing is allocated unless it throws.
function rejectNonJson(this: unknown, key: string, value: unknown): unknown {
  switch (typeof value) {
    case 'function':
    case 'symbol':
    case 'bigint':
      throw new TypeError(`${typeof value} at ${placeOf(key)}`);
    case 'object': {
      // After toJSON: a Buffer (which has one) arrives here as a plain object and is kept.
      const kind = value === null ? undefined : lossyKind(value);
      if (kind) throw new TypeError(`${kind} at ${placeOf(key)} (JSON would store it as an object without its contents)`);
      return value;
    }
    default:
      return value;
  }
}

/**
 * JSON data conversion with strict checks: functions, symbols, BigInts, cycles, Maps, Sets,
 * promises and binary buffers without a toJSON are refused rather than silently dropped, emptied or crashing
 * later, and payloads over `maxBytes` are refused. As in JSON, `undefined` object properties are
 * left out and a top-level `undefined` means "no value".
 */
export class JsonCodec implements Codec {
  readonly #maxBytes: number;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  get maxPayloadBytes(): number {
    return this.#maxBytes;
  }

  encode(value: unknown, what: string): string | undefined {
    if (value === undefined) return undefined;
    let text: string | undefined;
    try {
      // A replacer takes JSON.stringify off its fast path; a primitive has nothing it could refuse.
      const isPrimitive = value === null || typeof value === 'number' || typeof value === 'string' || typeof value === 'boolean';
      text = JSON.stringify(value, isPrimitive ? undefined : rejectNonJson) as string | undefined;
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new InvalidArgumentError(`${what} is not JSON-serialisable: ${reason}`, { cause: error });
    }
    // A value whose toJSON() returns undefined has no JSON form: like undefined, it means "no value".
    if (text === undefined) return undefined;
    this.checkSize(text, what);
    return text;
  }

  checkSize(text: string, what: string): void {
    // A UTF-16 unit is at most 3 UTF-8 bytes: measure exactly only when it could matter.
    if (text.length * 3 > this.#maxBytes) this.checkBytes(this.byteLength(text), what);
  }

  byteLength(text: string): number {
    return Buffer.byteLength(text, 'utf8');
  }

  checkBytes(bytes: number, what: string): void {
    if (bytes > this.#maxBytes) throw new PayloadTooLargeError(what, bytes, this.#maxBytes);
  }

  activityOptions(options: unknown): string {
    if (typeof options !== 'object' || options === null) {
      throw new InvalidArgumentError('activity options must be an object');
    }
    checkKnownKeys(options, ['retry', 'startToCloseTimeoutMs'], 'activity options');
    const { retry, startToCloseTimeoutMs } = options as Record<string, unknown>;
    const checked: Record<string, unknown> = {};
    try {
      const policy = checkRetryPolicy(retry, 'activity options.retry');
      if (retry !== undefined) {
        // Only the known fields are stored; JSON has no Infinity, so "unlimited" is stored as the
        // largest safe integer.
        const { maxAttempts, initialIntervalMs, backoffCoefficient, maxIntervalMs, nonRetryable } = policy;
        checked.retry = {
          maxAttempts: maxAttempts === Infinity ? Number.MAX_SAFE_INTEGER : maxAttempts,
          initialIntervalMs,
          backoffCoefficient,
          maxIntervalMs,
          nonRetryable: nonRetryable && [...nonRetryable],
        };
      }
    } catch (error) {
      throw new InvalidArgumentError((error as Error).message, { cause: error });
    }
    if (startToCloseTimeoutMs !== undefined) {
      // A timer fires at once past 2^31-1 ms; an attempt is not given longer than that (24.8 days).
      if (typeof startToCloseTimeoutMs !== 'number' || !(startToCloseTimeoutMs > 0) || !(startToCloseTimeoutMs <= MAX_DELAY_MS)) {
        throw new InvalidArgumentError(
          `activity options.startToCloseTimeoutMs must be a positive number of milliseconds up to ${MAX_DELAY_MS} (24.8 days)`,
        );
      }
      checked.startToCloseTimeoutMs = startToCloseTimeoutMs;
    }
    return JSON.stringify(checked);
  }

  name(value: unknown, what: string): string {
    return checkName(value, what);
  }

  options(value: unknown, known: readonly string[], what: string): void {
    if (typeof value !== 'object' || value === null) throw new InvalidArgumentError(`${what} must be an object`);
    checkKnownKeys(value, known, what);
  }

  decode(text: string | null | undefined): unknown {
    return text === null || text === undefined ? undefined : JSON.parse(text);
  }
}
