import type { SerializedFailure } from '../actors/history.js';

export type { SerializedFailure };

const MAX_CAUSE_DEPTH = 8;

/**
 * Reads `key` of a thrown value without letting a hostile getter, proxy or toString escape: a
 * workflow or activity may throw anything, and describing it must never throw in turn.
 */
function read(value: object, key: string): unknown {
  try {
    return (value as Record<string, unknown>)[key];
  } catch {
    return undefined;
  }
}

function safeString(value: unknown, fallback: string): string {
  try {
    return typeof value === 'string' ? value : String(value);
  } catch {
    return fallback;
  }
}

/** Wraps anything thrown into an Error (a thrown string or object becomes its message). */
export function coerceError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  if (typeof thrown === 'object' && thrown !== null) {
    const message = read(thrown, 'message');
    const e = new Error(
      message === undefined ? `non-error thrown: ${safeString(thrown, 'object')}` : safeString(message, 'unreadable message'),
    );
    const name = read(thrown, 'name');
    if (name !== undefined) e.name = safeString(name, 'Error');
    return e;
  }
  return new Error(typeof thrown === 'string' ? thrown : `non-error thrown: ${safeString(thrown, typeof thrown)}`);
}

/**
 * `value` as JSON would carry it (functions and symbols left out, `toJSON` applied), or undefined
 * if JSON cannot carry it: a value kept as is could still fail to be copied out of a thread (a
 * function inside, say), and that would take the thread down with it.
 */
function asJson(value: unknown): unknown {
  try {
    const text = JSON.stringify(value);
    return text === undefined ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The plain-JSON form of a thrown value, keeping name, message, stack, code, the non-retryable
 * mark, JSON details and the cause chain (go-workflows `FromError`, temporal `nonRetryable`).
 * Never throws, whatever was thrown.
 */
export function toFailure(thrown: unknown, depth = 0): SerializedFailure {
  const error = coerceError(thrown);
  const failure: SerializedFailure = {
    name: safeString(read(error, 'name'), 'Error') || 'Error',
    message: safeString(read(error, 'message'), 'unreadable message'),
  };
  const stack = read(error, 'stack');
  if (typeof stack === 'string' && stack) failure.stack = stack;
  const code = read(error, 'code');
  if (typeof code === 'string') failure.code = code;
  if (read(error, 'nonRetryable') === true) failure.nonRetryable = true;
  const details = asJson(read(error, 'details'));
  if (details !== undefined) failure.details = details;
  const cause = read(error, 'cause');
  if (cause !== undefined && depth < MAX_CAUSE_DEPTH) failure.cause = toFailure(cause, depth + 1);
  return failure;
}

/** An Error rebuilt from its plain form: same name, message, stack, code and cause chain. */
export function fromFailure(failure: SerializedFailure): Error {
  const error = new Error(failure.message, failure.cause ? { cause: fromFailure(failure.cause) } : undefined);
  error.name = failure.name;
  if (failure.stack !== undefined) error.stack = failure.stack;
  const extra = error as Error & { code?: string; nonRetryable?: boolean; details?: unknown };
  if (failure.code !== undefined) extra.code = failure.code;
  if (failure.nonRetryable) extra.nonRetryable = true;
  if (failure.details !== undefined) extra.details = failure.details;
  return error;
}
