import type { WorkflowWrite } from '../storage/rows.js';
import { outcomesIn } from './history.js';
import type { ActorMessage } from './messages.js';

/**
 * The writes of an actor's steps that took activity outcomes and have not committed, oldest
 * first, each beside its step (counted as the actor counts the steps it hands to the WAL): the
 * database has no trace of those outcomes until then, so a failed flush hands them, read back
 * from the writes, to the rebuild. The writes live until their commit anyway, where the messages
 * would be kept alive for it.
 *
 * Kept as pairs (a write, then its step) in one array, made on first use and then written over:
 * nearly every step takes an outcome, and the actor makes this only once it does.
 */
export class UncommittedOutcomes {
  readonly #pairs: (WorkflowWrite | number | undefined)[] = [];
  #count = 0;

  /** Writes kept. */
  get count(): number {
    return this.#count;
  }

  /** Keeps the write of `step`, just enqueued, until it commits. */
  keep(write: WorkflowWrite, step: number): void {
    const at = 2 * this.#count++;
    this.#pairs[at] = write;
    this.#pairs[at + 1] = step;
  }

  /** Drops the writes of the steps up to `committed` (a workflow's steps commit in order). */
  forgetCommitted(committed: number): void {
    const pairs = this.#pairs;
    const end = 2 * this.#count;
    let done = 0;
    while (done < end && (pairs[done + 1] as number) <= committed) done += 2;
    if (done === 0) return;
    pairs.copyWithin(0, done, end);
    // Cleared, so a committed write is not kept alive by a slot no longer counted.
    pairs.fill(undefined, end - done, end);
    this.#count -= done / 2;
  }

  /** Adds the activity outcomes the kept writes took to `into`, as the messages that brought them. */
  outcomesTo(into: ActorMessage[]): void {
    for (let at = 0; at < 2 * this.#count; at += 2) outcomesIn(this.#pairs[at] as WorkflowWrite, into);
  }
}
