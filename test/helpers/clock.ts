import { vi } from 'vitest';

/**
 * Moves `Date.now()` (the wall clock, as the engine reads it) `ms` ahead of the real one until
 * `restore()`; the clock keeps running meanwhile. Timers and `performance.now()` are left alone.
 */
export function clockAhead(ms: number): { restore(): void } {
  const realNow = Date.now.bind(Date);
  const spy = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + ms);
  return { restore: () => spy.mockRestore() };
}
