import { LATEST_TIME_MS } from '../storage/rows.js';
import { shownValue } from './shown-value.js';

/**
 * The errors a time check throws. Inside a workflow they are JavaScript's own (a value of the
 * wrong type a TypeError, one out of range a RangeError); at the engine's API both are its
 * InvalidArgumentError.
 */
export interface TimeCheckErrors {
  wrongType(message: string): Error;
  outOfRange(message: string): Error;
}

/**
 * Checks a point in time a caller passes as a Date or epoch milliseconds; returns the
 * milliseconds. Shared by workflow code's calls (`sleepUntil`) and the engine's API.
 */
export function checkedEpochMs(at: unknown, what: string, errors: TimeCheckErrors): number {
  const ms = at instanceof Date ? at.getTime() : at;
  if (typeof ms !== 'number' || !Number.isFinite(ms)) {
    throw errors.wrongType(`${what} must be a Date or a finite number of epoch milliseconds, got ${shownValue(at)}`);
  }
  if (Math.abs(ms) > LATEST_TIME_MS) throw errors.outOfRange(`${what} ${ms} is outside the range of a Date`);
  return ms;
}

/**
 * Checks a delay from `now` a caller passes: finite milliseconds, not negative, ending within the
 * range of a Date. A delay that is no number at all is out of range too, as a negative one is.
 */
export function checkedDurationMs(ms: unknown, now: number, what: string, errors: TimeCheckErrors): number {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
    throw errors.outOfRange(`${what} must be a finite number of milliseconds >= 0, got ${shownValue(ms)}`);
  }
  if (ms > LATEST_TIME_MS - now) throw errors.outOfRange(`${what} ${ms} ends beyond the range of a Date`);
  return ms;
}
