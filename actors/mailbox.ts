import fastq from 'fastq';

const noop = (): void => undefined;

/** Mailboxes whose next run should be queued once the current synchronous run is over. */
let toKick: Mailbox<unknown>[] = [];

function kickAll(): void {
  const mailboxes = toKick;
  toKick = [];
  for (const mailbox of mailboxes) mailbox.kick();
}

/** fastq calls this with `this` bound to the mailbox: one function for all mailboxes. */
function runNext(this: Mailbox<unknown>, _arg: void, done: (error: Error | null) => void): void {
  this.run(done);
}

/**
 * An actor's mailbox: a fastq queue of concurrency 1, so the handler never runs concurrently with
 * itself. Messages that arrive while the handler runs are handed over together on its next run,
 * which is what lets one activation take everything queued for the actor at once.
 *
 * Modes:
 * - idle: nothing queued, and no fastq queue held (a sleeping workflow's actor should cost as
 *   little memory as possible). A push schedules one run, in a microtask, so everything the
 *   caller pushes in the same synchronous run joins it and the handler never runs on the
 *   caller's stack.
 * - scheduled: a run is queued in fastq and will take every message pushed until it starts.
 * - running: the handler has a batch; pushes collect for the next run.
 * - killed: pushes are ignored; the queue is emptied.
 */
export class Mailbox<Message> {
  readonly #handle: (batch: Message[], receivedAt: number) => Promise<void>;
  readonly #onError: (error: unknown) => void;
  #queue: fastq.queue<void, void> | undefined;
  #messages: Message[] = [];
  #isScheduled = false;
  #isRunning = false;
  #isKilled = false;
  /** Size of the batch being handled. */
  #inProgress = 0;
  /** performance.now() when the first message of the next batch arrived. */
  #firstPushAt = 0;
  #idleWaiters: (() => void)[] | undefined;

  /** `handle` gets each batch with the time its first message arrived (performance.now()). */
  constructor(handle: (batch: Message[], receivedAt: number) => Promise<void>, onError: (error: unknown) => void) {
    this.#handle = handle;
    this.#onError = onError;
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
    if (toKick.length === 0) queueMicrotask(kickAll);
    toKick.push(this as Mailbox<unknown>);
  }

  /** Resolves when every message pushed so far has been handled. */
  drained(): Promise<void> {
    if (this.isIdle) return Promise.resolve();
    return new Promise((resolve) => (this.#idleWaiters ??= []).push(resolve));
  }

  /** Drops whatever is queued and refuses further messages. */
  kill(): void {
    this.#isKilled = true;
    this.#messages = [];
  }

  /** Queues the next run (called from the shared microtask). @internal */
  kick(): void {
    this.#queue ??= fastq<Mailbox<unknown>, void, void>(this as Mailbox<unknown>, runNext, 1);
    this.#queue.push(undefined, noop);
  }

  /** One run: takes everything queued and hands it to the handler. @internal */
  run(done: (error: Error | null) => void): void {
    this.#isScheduled = false;
    const batch = this.#messages;
    this.#messages = [];
    if (this.#isKilled || batch.length === 0) {
      this.#settle(done);
      return;
    }
    this.#isRunning = true;
    this.#inProgress = batch.length;
    this.#handle(batch, this.#firstPushAt).then(
      () => this.#settle(done),
      (error: unknown) => {
        try {
          this.#onError(error);
        } catch {
          // onError is the last place to report to; the mailbox must keep serving regardless.
        }
        this.#settle(done);
      },
    );
  }

  #settle(done: (error: Error | null) => void): void {
    this.#isRunning = false;
    this.#inProgress = 0;
    done(null);
    if (!this.isIdle) return;
    // Nothing queued: let the queue go until the next message.
    this.#queue = undefined;
    const waiters = this.#idleWaiters;
    if (!waiters) return;
    this.#idleWaiters = undefined;
    for (const resolve of waiters) resolve();
  }
}
