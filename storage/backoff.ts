/**
 * How long to wait before try `attempt` + 1 after a transient failure: doubling from `baseMs` up
 * to `capMs`, with jitter so that retrying callers do not arrive together.
 */
export function retryDelayMs(attempt: number, baseMs: number, capMs: number): number {
  return Math.min(baseMs * 2 ** Math.min(attempt, 20), capMs) * (0.5 + Math.random() / 2);
}

/**
 * Resolves after `ms`, or at once when `signal` aborts; never rejects. Every backoff waits with
 * it, on the global timers rather than node:timers/promises: fake timers replace only the global
 * ones, and a test holds a backoff with them for as long as it needs.
 */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const end = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', end);
      resolve();
    };
    const timer = setTimeout(end, ms);
    signal?.addEventListener('abort', end);
  });
}
