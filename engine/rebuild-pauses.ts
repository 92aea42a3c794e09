import { retryDelayMs } from '../storage/backoff.js';

/**
 * How long to wait before the rebuild after an actor's `failures`-th failure in a row: none after
 * the first, then from 100 ms doubling up to a minute (jittered, so actors failed together by one
 * outage do not come back together).
 */
function rebuildDelayMs(failures: number): number {
  return failures <= 1 ? 0 : retryDelayMs(failures - 2, 100, 60_000);
}

/**
 * When failed actors are rebuilt. Each workflow's failures are counted since its last committed
 * step: one that fails the same way at every rebuild (a row it cannot read, a step it cannot
 * store) is rebuilt with a growing pause, not in a loop.
 *
 * Per workflow: not failing (no count); failed and rebuilt at once (the first failure in a row);
 * paused (a later failure: its rebuild waits out the pause, and further failures meanwhile only
 * count). A committed step ends the count.
 */
export class RebuildPauses {
  readonly #failures = new Map<string, number>();
  /** Rebuilds waiting out their pause, by workflow. */
  readonly #paused = new Map<string, NodeJS.Timeout>();
  readonly #rebuild: (workflowId: string) => void;

  /** `rebuild` recovers the workflow (at once, or when its pause ends). */
  constructor(rebuild: (workflowId: string) => void) {
    this.#rebuild = rebuild;
  }

  /** A step of the workflow committed: its actor's failures in a row end. */
  stepCommitted(workflowId: string): void {
    if (this.#failures.size > 0) this.#failures.delete(workflowId);
  }

  /** The workflow's actor failed: rebuilds it now, or once its pause ends. */
  failed(workflowId: string): void {
    const failures = (this.#failures.get(workflowId) ?? 0) + 1;
    this.#failures.set(workflowId, failures);
    // One rebuild waits at a time; what comes for the workflow meanwhile is dropped (isPaused),
    // and the rebuild's recovery reads it again from the database (or, for an attempt's outcome,
    // from the engine's UnstoredOutcomes).
    if (this.#paused.has(workflowId)) return;
    const delayMs = rebuildDelayMs(failures);
    if (delayMs === 0) {
      this.#rebuild(workflowId);
      return;
    }
    const timer = setTimeout(() => {
      this.#paused.delete(workflowId);
      this.#rebuild(workflowId);
    }, delayMs);
    this.#paused.set(workflowId, timer);
  }

  /** Whether the workflow waits out a pause before its rebuild. */
  isPaused(workflowId: string): boolean {
    return this.#paused.size > 0 && this.#paused.has(workflowId);
  }

  /** Cancels the rebuilds waiting out their pause (the engine closes). */
  close(): void {
    for (const timer of this.#paused.values()) clearTimeout(timer);
  }
}
