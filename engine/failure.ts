import type { SerializedFailure } from '../actors/history.js';

export type { SerializedFailure };

const MAX_CAUSE_DEPTH = 8;
/**
 * Longest message or stack kept, in characters, and longest details kept, as JSON: a failure is
 * stored in history and copied into the failures that wrap it, so an error carrying megabytes
 * (or more than a string can hold, once copied) must not make the step impossible to store.
 */
const MAX_FAILURE_TEXT = 32 * 1024;
const MAX_FAILURE_DETAILS = 64 * 1024;

/** `text` cut to MAX_FAILURE_TEXT characters, saying how much was left out. */
function capped(text: string): string {
  return text.length <= MAX_FAILURE_TEXT
    ? text
    : `${text.slice(0, MAX_FAILURE_TEXT)}… (${text.length - MAX_FAILURE_TEXT} more characters left out)`;
}

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

/** `instanceof Error`, false for a value that cannot say (a revoked proxy throws when asked). */
function isError(value: unknown): value is Error {
  try {
    return value instanceof Error;
  } catch {
    return false;
  }
}

/** Wraps anything thrown into an Error (a thrown string or object becomes its message). */
export function coerceError(thrown: unknown): Error {
  if (isError(thrown)) return thrown;
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
 * function inside, say), and that would take the thread down with it. Details longer than
 * MAX_FAILURE_DETAILS as JSON are left out too.
 */
function asJson(value: unknown): unknown {
  try {
    const text = JSON.stringify(value);
    return text === undefined || text.length > MAX_FAILURE_DETAILS ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The plain-JSON form of a thrown value, keeping name, message, stack, code, the non-retryable
 * mark, JSON details and the cause chain (go-workflows `FromError`, temporal `nonRetryable`).
 * Never throws, whatever was thrown. Messages and stacks are cut to 32 Ki characters, names and
 * codes to 256, and details over 64 Ki characters of JSON are left out.
 */
export function toFailure(thrown: unknown, depth = 0): SerializedFailure {
  const error = coerceError(thrown);
  const failure: SerializedFailure = {
    name: (safeString(read(error, 'name'), 'Error') || 'Error').slice(0, 256),
    message: capped(safeString(read(error, 'message'), 'unreadable message')),
  };
  const stack = read(error, 'stack');
  if (typeof stack === 'string' && stack) failure.stack = capped(stack);
  const code = read(error, 'code');
  if (typeof code === 'string') failure.code = code.slice(0, 256);
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
