import { TimeoutError } from './errors.js';
import { MAX_DELAY_MS } from './timer-service.js';

/** What a caller waiting for `workflowId` longer than `timeoutMs` gets. */
export function resultTimeout(workflowId: string, timeoutMs: number): TimeoutError {
  return new TimeoutError(`workflow ${JSON.stringify(workflowId)} did not end within ${timeoutMs} ms`);
}

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
  /** This process runs the workflow and settles the wait itself (no database re-read needed). */
  isRunningHere: boolean;
}

/**
 * Callers waiting for workflows to end, by workflow id. Settled in-process by the engine that ran
 * the workflow, or after a NOTIFY by re-reading the workflows waited on: never by a polling loop.
 */
export class ResultWaiters {
  readonly #waiters = new Map<string, Set<Waiter>>();
  #callers = 0;
  // Waits on workflows not running in this process, by id: only these need the database re-read.
  readonly #elsewhere = new Map<string, number>();
  // Holds the process open while anyone waits on a workflow running elsewhere: a caller awaiting
  // only a result would otherwise see its process exit once a dropped connection leaves nothing
  // else on the event loop. (A workflow running here keeps the engine's own timers going.)
  #keepAlive: NodeJS.Timeout | undefined;

  /** Ids someone waits on whose end this process will not settle by itself. */
  idsElsewhere(): string[] {
    return [...this.#elsewhere.keys()];
  }

  /** Callers waiting, however many wait on one workflow. */
  get size(): number {
    return this.#callers;
  }

  /**
   * Registers a wait before the caller looks at the database, so an end that commits in between
   * is not missed. `isRunningHere` says this process runs the workflow and will settle it.
   * `cancel` withdraws the wait.
   */
  wait(
    workflowId: string,
    timeoutMs: number | undefined,
    isRunningHere = false,
  ): { promise: Promise<Outcome>; cancel: () => void } {
    let waiter!: Waiter;
    const promise = new Promise<Outcome>((resolve, reject) => {
      waiter = { resolve, reject, timer: undefined, isRunningHere };
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
    this.#callers++;
    if (!isRunningHere) this.#addElsewhere(workflowId);
    const cancel = (): void => {
      if (waiter.timer) clearTimeout(waiter.timer);
      if (!set.delete(waiter)) return;
      this.#callers--;
      if (set.size === 0 && this.#waiters.get(workflowId) === set) this.#waiters.delete(workflowId);
      if (!waiter.isRunningHere) {
        const left = (this.#elsewhere.get(workflowId) ?? 1) - 1;
        if (left > 0) this.#elsewhere.set(workflowId, left);
        else this.#elsewhere.delete(workflowId);
        this.#releaseWhenNoneElsewhere();
      }
    };
    // Infinity is the default's "no limit", spelled out.
    if (timeoutMs !== undefined && timeoutMs !== Infinity) {
      // A longer timeout waits in laps of the longest delay a timer keeps.
      const timeOutIn = (left: number): void => {
        waiter.timer = setTimeout(() => {
          if (left > MAX_DELAY_MS) return timeOutIn(left - MAX_DELAY_MS);
          cancel();
          waiter.reject(resultTimeout(workflowId, timeoutMs));
        }, Math.min(left, MAX_DELAY_MS));
      };
      timeOutIn(timeoutMs);
    }
    return { promise, cancel };
  }

  /**
   * This process no longer settles the waits it registered as its own (it stopped running some
   * workflows): from now on they are re-read from the database like the others.
   */
  moveAllElsewhere(): void {
    for (const [workflowId, set] of this.#waiters) {
      for (const waiter of set) {
        if (!waiter.isRunningHere) continue;
        waiter.isRunningHere = false;
        this.#addElsewhere(workflowId);
      }
    }
  }

  #addElsewhere(workflowId: string): void {
    this.#elsewhere.set(workflowId, (this.#elsewhere.get(workflowId) ?? 0) + 1);
    this.#keepAlive ??= setInterval(() => undefined, 2 ** 30);
  }

  settle(workflowId: string, outcome: Outcome): void {
    const set = this.#waiters.get(workflowId);
    if (!set) return;
    this.#waiters.delete(workflowId);
    this.#callers -= set.size;
    if (this.#elsewhere.delete(workflowId)) this.#releaseWhenNoneElsewhere();
    for (const waiter of set) {
      if (waiter.timer) clearTimeout(waiter.timer);
      waiter.resolve(outcome);
    }
    // A late cancel then finds nothing to withdraw, even if new waits on the id came since.
    set.clear();
  }

  rejectAll(error: Error): void {
    const all = [...this.#waiters.values()];
    this.#waiters.clear();
    this.#callers = 0;
    this.#elsewhere.clear();
    this.#releaseWhenNoneElsewhere();
    for (const set of all) {
      for (const waiter of set) {
        if (waiter.timer) clearTimeout(waiter.timer);
        waiter.reject(error);
      }
      set.clear();
    }
  }

  #releaseWhenNoneElsewhere(): void {
    if (this.#elsewhere.size > 0 || this.#keepAlive === undefined) return;
    clearInterval(this.#keepAlive);
    this.#keepAlive = undefined;
  }
}
