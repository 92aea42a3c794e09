import { FixedQueue, queueOptionsSymbol, type TaskQueue } from 'piscina';

type Task = Parameters<TaskQueue['push']>[0];

/** What the pool hands Piscina for a batch: its attempts as one JSON array, and how many. */
export interface BatchTask {
  text: string;
  /** For BatchQueue, on this thread: a symbol key is not cloned into the activity thread. */
  [queueOptionsSymbol]: { attempts: number };
}

/**
 * Piscina's queue of the batch threads' tasks. Piscina queues a batch only while no batch thread
 * can take it (one is starting, or is being replaced after it died), and counts what it holds in
 * batches; this queue also counts their attempts, which wait there as much as those the pool has
 * not sent yet. First in, first out, as the FixedQueue it wraps (Piscina's default).
 */
export class BatchQueue implements TaskQueue {
  readonly #tasks = new FixedQueue();
  #attempts = 0;

  /** Attempts in the batches queued. */
  get attempts(): number {
    return this.#attempts;
  }

  get size(): number {
    return this.#tasks.size;
  }

  push(task: Task): void {
    this.#tasks.push(task);
    this.#attempts += attemptsIn(task);
  }

  unshift(task: Task): void {
    this.#tasks.unshift(task);
    this.#attempts += attemptsIn(task);
  }

  shift(): Task | null {
    const task = this.#tasks.shift();
    if (task) this.#attempts -= attemptsIn(task);
    return task;
  }

  remove(task: Task): void {
    const size = this.#tasks.size;
    this.#tasks.remove(task);
    // Piscina may remove a task that has left the queue already (it aborts idempotently).
    if (this.#tasks.size < size) this.#attempts -= attemptsIn(task);
  }
}

/** Attempts in `task`: none in a task that is not a batch (the module's description at start). */
function attemptsIn(task: Task): number {
  return (task[queueOptionsSymbol] as BatchTask[typeof queueOptionsSymbol] | null)?.attempts ?? 0;
}
