import { TimeoutError } from './errors.js';

/** How a workflow ended, as stored. */
export interface Outcome {
  status: 'completed' | 'failed';
  result: string | null;
  error: string | null;
}

interface Waiter {
  resolve: (outcome: Outcome) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Callers waiting for workflows to end, by workflow id. Settled in-process by the engine that ran
 * the workflow, or after a NOTIFY by re-reading the workflows waited on: never by a polling loop.
 */
export class ResultWaiters {
  readonly #waiters = new Map<string, Set<Waiter>>();

  /** Ids someone waits on. */
  ids(): string[] {
    return [...this.#waiters.keys()];
  }

  get size(): number {
    return this.#waiters.size;
  }

  /**
   * Registers a wait before the caller looks at the database, so an end that commits in between
   * is not missed. `cancel` withdraws it.
   */
  wait(workflowId: string, timeoutMs: number | undefined): { promise: Promise<Outcome>; cancel: () => void } {
    let waiter!: Waiter;
    const promise = new Promise<Outcome>((resolve, reject) => {
      waiter = { resolve, reject, timer: undefined };
    });
    // The caller may still be reading the database when a close or timeout rejects this; it awaits
    // the promise afterwards, so the rejection is not unhandled (fastq's fork idiom).
    promise.catch(() => undefined);
    let set = this.#waiters.get(workflowId);
    if (!set) {
      set = new Set();
      this.#waiters.set(workflowId, set);
    }
    set.add(waiter);
    const cancel = (): void => {
      if (waiter.timer) clearTimeout(waiter.timer);
      set.delete(waiter);
      if (set.size === 0 && this.#waiters.get(workflowId) === set) this.#waiters.delete(workflowId);
    };
    if (timeoutMs !== undefined) {
      waiter.timer = setTimeout(() => {
        cancel();
        waiter.reject(new TimeoutError(`workflow ${JSON.stringify(workflowId)} did not end within ${timeoutMs} ms`));
      }, timeoutMs);
    }
    return { promise, cancel };
  }

  settle(workflowId: string, outcome: Outcome): void {
    const set = this.#waiters.get(workflowId);
    if (!set) return;
    this.#waiters.delete(workflowId);
    for (const waiter of set) {
      if (waiter.timer) clearTimeout(waiter.timer);
      waiter.resolve(outcome);
    }
  }

  rejectAll(error: Error): void {
    const all = [...this.#waiters.values()];
    this.#waiters.clear();
    for (const set of all) {
      for (const waiter of set) {
        if (waiter.timer) clearTimeout(waiter.timer);
        waiter.reject(error);
      }
    }
  }
}
