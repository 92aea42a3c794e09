import { checkedDurationMs, checkedEpochMs, type TimeCheckErrors } from '../actors/time-checks.js';
import { InvalidArgumentError } from './errors.js';

/** Longest workflow id, workflow name or event name, in UTF-16 units. */
export const MAX_NAME_LENGTH = 256;

/**
 * Checks an identifier a caller passes (workflow id, workflow name, event name): a non-empty
 * string of at most MAX_NAME_LENGTH units that Postgres can store as is (no NUL, no lone
 * surrogate, which would otherwise be silently replaced on the way in).
 */
export function checkName(value: unknown, what: string): string {
  if (typeof value !== 'string') {
    throw new InvalidArgumentError(`${what} must be a string, got ${value === null ? 'null' : typeof value}`);
  }
  if (value.length === 0) throw new InvalidArgumentError(`${what} must not be empty`);
  if (value.length > MAX_NAME_LENGTH) {
    throw new InvalidArgumentError(`${what} is ${value.length} characters long; the limit is ${MAX_NAME_LENGTH}`);
  }
  if (value.includes('\0')) throw new InvalidArgumentError(`${what} must not contain NUL characters`);
  if (!value.isWellFormed()) throw new InvalidArgumentError(`${what} contains an unpaired UTF-16 surrogate`);
  // The embedded database drops a leading byte-order mark from text it returns: such a name
  // would not come back as it went in.
  if (value.charCodeAt(0) === 0xfeff) throw new InvalidArgumentError(`${what} must not start with U+FEFF`);
  return value;
}


/** The time checks' errors at the API: a bad argument, whatever was wrong with it. */
const API_TIME_ERRORS: TimeCheckErrors = {
  wrongType: (message) => new InvalidArgumentError(message),
  outOfRange: (message) => new InvalidArgumentError(message),
};

/** Checks a point in time a caller passes as a Date or epoch milliseconds; returns the milliseconds. */
export function checkEpochMs(at: unknown, what: string): number {
  return checkedEpochMs(at, what, API_TIME_ERRORS);
}

/** Checks a delay from now a caller passes: finite milliseconds, not negative, ending within the range of a Date. */
export function checkDurationMs(ms: unknown, what: string): number {
  return checkedDurationMs(ms, Date.now(), what, API_TIME_ERRORS);
}

/** Edits (insertions, deletions, substitutions) between `a` and `b`; stops counting past `limit`. */
function editDistance(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/**
 * Throws (an error made by `fail`) if `options` has a key that is not one of `known`: a misspelt
 * option (`workflowID`) would otherwise be ignored without a word and its default used. Names the
 * key, the known one it is closest to, and every known one.
 */
export function checkKnownKeys(
  options: object,
  known: readonly string[],
  what: string,
  fail: (message: string) => Error = (message) => new InvalidArgumentError(message),
): void {
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue;
    const lower = key.toLowerCase();
    const near = known.find((k) => k.toLowerCase() === lower) ?? known.find((k) => editDistance(k, key, 2) <= 2);
    const shown = JSON.stringify(key.length > 60 ? `${key.slice(0, 60)}…` : key);
    throw fail(`${what} has no option ${shown}${near ? ` (did you mean ${near}?)` : ''}; the options are ${known.join(', ')}`);
  }
}
