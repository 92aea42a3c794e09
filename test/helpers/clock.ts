import { vi } from 'vitest';

/**
 * Moves `Date.now()` (the wall clock, as the engine reads it) `ms` ahead of the real one until
 * `restore()`, or, given a function, as far ahead as it says at each read; the clock keeps running
 * meanwhile. Timers and `performance.now()` are left alone.
 */
export function clockAhead(ms: number | (() => number)): { restore(): void } {
  const realNow = Date.now.bind(Date);
  const ahead = typeof ms === 'number' ? () => ms : ms;
  const spy = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + ahead());
  return { restore: () => spy.mockRestore() };
}
