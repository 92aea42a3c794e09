import type { SerializedFailure } from '../actors/history.js';

export type { SerializedFailure };

const MAX_CAUSE_DEPTH = 8;

/** Wraps anything thrown into an Error (a thrown string or object becomes its message). */
export function coerceError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  if (typeof thrown === 'object' && thrown !== null && 'message' in thrown) {
    const e = new Error(String((thrown as { message: unknown }).message));
    if ('name' in thrown) e.name = String((thrown as { name: unknown }).name);
    return e;
  }
  return new Error(typeof thrown === 'string' ? thrown : `non-error thrown: ${safeString(thrown)}`);
}

function safeString(value: unknown): string {
  try {
    return String(value);
  } catch {
    return typeof value;
  }
}

function isJsonSafe(value: unknown): boolean {
  try {
    return JSON.stringify(value) !== undefined;
  } catch {
    return false;
  }
}

/**
 * The plain-JSON form of a thrown value, keeping name, message, stack, code, the non-retryable
 * mark, JSON details and the cause chain (go-workflows `FromError`, temporal `nonRetryable`).
 */
export function toFailure(thrown: unknown, depth = 0): SerializedFailure {
  const error = coerceError(thrown);
  const failure: SerializedFailure = { name: error.name || 'Error', message: error.message };
  if (error.stack) failure.stack = error.stack;
  const extra = error as { code?: unknown; nonRetryable?: unknown; details?: unknown };
  if (typeof extra.code === 'string') failure.code = extra.code;
  if (extra.nonRetryable === true) failure.nonRetryable = true;
  if (extra.details !== undefined && isJsonSafe(extra.details)) failure.details = extra.details;
  if (error.cause !== undefined && depth < MAX_CAUSE_DEPTH) failure.cause = toFailure(error.cause, depth + 1);
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
