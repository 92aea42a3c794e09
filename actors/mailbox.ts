import fastq from 'fastq';

/**
 * An actor's mailbox: a fastq queue of concurrency 1, so the handler never runs concurrently with
 * itself. Messages that arrive while the handler runs are handed over together on its next run,
 * which is what lets one activation take everything queued for the actor at once.
 *
 * Modes:
 * - idle: nothing queued; a push schedules one run.
 * - scheduled: a run is queued in fastq and will take every message pushed until it starts.
 * - running: the handler has a batch; pushes collect for the next run.
 * - killed: pushes are ignored; the queue is emptied.
 */
export class Mailbox<Message> {
  readonly #queue: fastq.queueAsPromised<void, void>;
  #messages: Message[] = [];
  #isScheduled = false;
  #isRunning = false;
  #isKilled = false;
  /** Size of the batch being handled. */
  #inProgress = 0;
  /** performance.now() when the first message of the next batch arrived. */
  #firstPushAt = 0;

  /** `handle` gets each batch with the time its first message arrived (performance.now()). */
  constructor(handle: (batch: Message[], receivedAt: number) => Promise<void>, onError: (error: unknown) => void) {
    this.#queue = fastq.promise<unknown, void, void>(async () => {
      this.#isScheduled = false;
      const batch = this.#messages;
      this.#messages = [];
      if (this.#isKilled || batch.length === 0) return;
      this.#isRunning = true;
      this.#inProgress = batch.length;
      try {
        await handle(batch, this.#firstPushAt);
      } catch (error) {
        onError(error);
      } finally {
        this.#isRunning = false;
        this.#inProgress = 0;
      }
    }, 1);
  }

  /** Messages not yet handled: those waiting plus the batch being handled now. */
  get depth(): number {
    return this.#messages.length + this.#inProgress;
  }

  /** Whether nothing is queued and nothing is being handled. */
  get isIdle(): boolean {
    return this.#messages.length === 0 && !this.#isRunning && !this.#isScheduled;
  }

  push(message: Message): void {
    if (this.#isKilled) return;
    if (this.#messages.length === 0) this.#firstPushAt = performance.now();
    this.#messages.push(message);
    if (this.#isScheduled) return;
    this.#isScheduled = true;
    // fastq runs an idle worker synchronously; deferring to a microtask lets every message pushed
    // by the caller's synchronous run join the batch, and keeps the handler off the caller's stack.
    // The worker never rejects (errors go to onError), so the promise needs no handler of its own.
    queueMicrotask(() => void this.#queue.push());
  }

  /** Resolves when every message pushed so far has been handled. */
  async drained(): Promise<void> {
    while (!this.isIdle) {
      if (this.#queue.idle()) await Promise.resolve(); // a run is about to be queued
      else await this.#queue.drained();
    }
  }

  /** Drops whatever is queued and refuses further messages. */
  kill(): void {
    this.#isKilled = true;
    this.#messages = [];
  }
}
