import { LATEST_TIME_MS } from '../storage/rows.js';
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

/** Checks a point in time a caller passes as a Date or epoch milliseconds; returns the milliseconds. */
export function checkEpochMs(at: unknown, what: string): number {
  const ms = at instanceof Date ? at.getTime() : at;
  if (typeof ms !== 'number' || !Number.isFinite(ms)) {
    throw new InvalidArgumentError(`${what} must be a valid Date or finite epoch milliseconds, got ${String(at)}`);
  }
  if (Math.abs(ms) > LATEST_TIME_MS) throw new InvalidArgumentError(`${what} ${ms} is outside the range of a Date`);
  return ms;
}

/** Checks a delay from now a caller passes: finite milliseconds, not negative, ending within the range of a Date. */
export function checkDurationMs(ms: unknown, what: string): number {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
    throw new InvalidArgumentError(`${what} must be a finite number of milliseconds >= 0, got ${String(ms)}`);
  }
  if (ms > LATEST_TIME_MS - Date.now()) throw new InvalidArgumentError(`${what} ${ms} ends beyond the range of a Date`);
  return ms;
}
