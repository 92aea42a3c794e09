/**
 * How long to wait before try `attempt` + 1 after a transient failure: doubling from `baseMs` up
 * to `capMs`, with jitter so that retrying callers do not arrive together.
 */
export function retryDelayMs(attempt: number, baseMs: number, capMs: number): number {
  return Math.min(baseMs * 2 ** Math.min(attempt, 20), capMs) * (0.5 + Math.random() / 2);
}
