import fastq from 'fastq';

import { appended, NO_ITEMS } from '../storage/lists.js';

const noop = (): void => undefined;

/** Mailboxes whose next run should be queued once the current synchronous run is over. */
let toKick: Mailbox<unknown>[] = [];

function kickAll(): void {
  const mailboxes = toKick;
  toKick = [];
  for (const mailbox of mailboxes) mailbox.kick();
}

/** The worker of every queue: the task is the mailbox to run, so queues are interchangeable. */
function runNext(mailbox: Mailbox<unknown>, done: (error: Error | null) => void): void {
  mailbox.run(done);
}

/**
 * Idle fastq queues, handed from mailbox to mailbox: a hot actor takes one per activation and
 * gives it back, instead of allocating a queue (some twenty closures) each time; an idle actor
 * holds none.
 */
const idleQueues: fastq.queue<Mailbox<unknown>, void>[] = [];
const MAX_IDLE_QUEUES = 4096;

/**
 * An actor's mailbox: a fastq queue of concurrency 1, so the handler never runs concurrently with
 * itself. Messages that arrive while the handler runs are handed over together on its next run,
 * which is what lets one activation take everything queued for the actor at once.
 *
 * Modes:
 * - idle: nothing queued, and no fastq queue held (a sleeping workflow's actor should cost as
 *   little memory as possible; see `idleQueues`). A push schedules one run, in a microtask, so everything the
 *   caller pushes in the same synchronous run joins it and the handler never runs on the
 *   caller's stack.
 * - scheduled: a run is queued in fastq and will take every message pushed until it starts.
 * - running: the handler has a batch; pushes collect for the next run.
 * - killed: pushes are ignored; the queue is emptied and what it held handed to the caller.
 *
 * `pushFirst` puts messages ahead of those waiting (an actor handing on what it set aside).
 */
export class Mailbox<Message> {
  readonly #handle: (batch: readonly Message[], receivedAt: number) => Promise<void>;
  readonly #onError: (error: unknown, batch: readonly Message[]) => void;
  readonly #onIdle: () => void;
  #queue: fastq.queue<Mailbox<unknown>, void> | undefined;
  // Empty, the shared list: a hot actor's mailbox sits empty for most of each step's round trip.
  #messages: readonly Message[] = NO_ITEMS;
  #isScheduled = false;
  #isRunning = false;
  #isKilled = false;
  /** Size of the batch being handled. */
  #inProgress = 0;
  /** performance.now() when the first message of the next batch arrived. */
  #firstPushAt = 0;
  #idleWaiters: (() => void)[] | undefined;

  /**
   * `handle` gets each batch with the time its first message arrived (performance.now());
   * `onError` gets what `handle` threw and the batch it was handling; `onIdle` is called whenever a
   * run leaves nothing queued.
   */
  constructor(
    handle: (batch: readonly Message[], receivedAt: number) => Promise<void>,
    onError: (error: unknown, batch: readonly Message[]) => void,
    onIdle: () => void = noop,
  ) {
    this.#handle = handle;
    this.#onError = onError;
    this.#onIdle = onIdle;
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
    this.#messages = appended(this.#messages, message);
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

  /** Refuses further messages; returns those queued and not yet handed to the handler. */
  kill(): readonly Message[] {
    this.#isKilled = true;
    const dropped = this.#messages;
    this.#messages = NO_ITEMS;
    return dropped;
  }

  /**
   * Queues `messages` ahead of anything already waiting for the next run (messages that arrived
   * earlier and were set aside by the handler).
   */
  pushFirst(messages: readonly Message[]): void {
    if (this.#isKilled || messages.length === 0) return;
    const waiting = this.#messages;
    const firstPushAt = this.#firstPushAt;
    this.#messages = NO_ITEMS;
    for (const message of messages) this.push(message);
    for (const message of waiting) this.#messages = appended(this.#messages, message);
    if (waiting.length > 0) this.#firstPushAt = Math.min(firstPushAt, this.#firstPushAt);
  }

  /** Queues the next run (called from the shared microtask). @internal */
  kick(): void {
    this.#queue ??= idleQueues.pop() ?? fastq<unknown, Mailbox<unknown>, void>(runNext, 1);
    this.#queue.push(this as Mailbox<unknown>, noop);
  }

  /** One run: takes everything queued and hands it to the handler. @internal */
  run(done: (error: Error | null) => void): void {
    this.#isScheduled = false;
    const batch = this.#messages;
    this.#messages = NO_ITEMS;
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
          this.#onError(error, batch);
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
    // Nothing queued: the (now idle) queue goes back for the next mailbox that needs one.
    if (this.#queue && idleQueues.length < MAX_IDLE_QUEUES) idleQueues.push(this.#queue);
    this.#queue = undefined;
    const waiters = this.#idleWaiters;
    if (waiters) {
      this.#idleWaiters = undefined;
      for (const resolve of waiters) resolve();
    }
    if (!this.#isKilled) this.#onIdle();
  }
}
