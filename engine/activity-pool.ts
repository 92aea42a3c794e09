import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { BroadcastChannel } from 'node:worker_threads';

import { Piscina, queueOptionsSymbol } from 'piscina';

import { type ActivityOutcome, type ActivityTask, activityIdOf } from './activity-context.js';
import { type ActivityFunction, AttemptStops, decodeInput, runAttempt } from './activity-runner.js';
import type { BatchStarted, BatchedOutcome, ThreadControl } from './activity-thread.js';
import { BatchQueue, type BatchTask } from './batch-queue.js';
import { quotedName } from '../actors/history.js';
import { JsonCodec } from './codec.js';
import {
  ConfigurationError,
  EngineClosedError,
  ErrorCode,
  NameTakenOverError,
  TimeoutError,
  unknownActivityFailure,
} from './errors.js';
import { toFailure } from './failure.js';
import { MAX_DELAY_MS } from './timer-service.js';

/** Extra time a stuck thread gets past an attempt's timeout before it is terminated. */
const HARD_TIMEOUT_GRACE_MS = 1_000;

/**
 * Attempts that take less than this on average cost less than the wake-up of a thread (a Piscina
 * dispatch plus the reply: hundreds of microseconds on a busy machine), so spreading a few of them
 * over every thread costs more than it saves.
 */
const CHEAP_ATTEMPT_MS = 1;

/**
 * Single-attempt threads per batch thread. A batch thread that dies leaves up to
 * `concurrencyPerThread` attempts to run alone, mostly waiting on I/O: more threads than there
 * are cores keeps that from taking minutes. Idle ones go after 30 s.
 */
const ALONE_THREADS_PER_THREAD = 4;

/** Fewest cheap attempts worth waking a further thread for. */
const MIN_CHEAP_BATCH = 32;

/** Options of the activity pool. */
export interface ActivityPoolOptions {
  /** Module whose exported functions run in the threads; none means inline activities only. */
  moduleUrl: URL | undefined;
  threads: number;
  /** Attempts one thread runs at once (activities are mostly I/O-bound). */
  concurrencyPerThread: number;
  inline: Readonly<Record<string, ActivityFunction>>;
  /** Heap limit of each thread, in MiB; a thread that exceeds it is replaced. */
  maxHeapMb: number | undefined;
  /** Largest JSON result an activity may return. */
  maxPayloadBytes: number;
}

/** One attempt to run, as the engine submits it (a task row and its timeout). */
export interface PoolTask {
  name: string;
  /** JSON of the input; undefined for none. */
  input: string | undefined;
  workflowId: string;
  commandId: number;
  attempt: number;
}

interface Pending<T extends PoolTask> {
  id: number;
  task: T;
  /** The name of the attempt's workflow, whose lease it runs under. */
  workflowName: string;
  /** The pool's short name for `workflowName`, sent with the attempt (see `AttemptStops`). */
  group: string;
  timeoutMs: number | undefined;
}

function toActivityTask(pending: Pending<PoolTask>, startId?: number): ActivityTask {
  const { id, group, task, timeoutMs } = pending;
  const attempt: ActivityTask = {
    id,
    group,
    name: task.name,
    input: task.input,
    workflowId: task.workflowId,
    activityId: activityIdOf(task.workflowId, task.commandId),
    attempt: task.attempt,
    timeoutMs,
  };
  if (startId !== undefined) attempt.startId = startId;
  return attempt;
}

/**
 * Whether an activity whose last attempt failed with `lastFailure` (its stored JSON) must run
 * alone from now on: that attempt took its thread down, or blocked it past its timeout, and in a
 * batch it would take its neighbours' progress down with the thread again.
 */
export function mustRunAlone(lastFailure: string | null | undefined): boolean {
  return typeof lastFailure === 'string' && (lastFailure.includes('"name":"ActivityThreadError"') || lastFailure.includes('"threadTerminated":true'));
}

/** How long a thread may stay blocked by an attempt with this timeout before it is terminated. */
function hardDeadlineMs(timeoutMs: number): number {
  return Math.min(timeoutMs + HARD_TIMEOUT_GRACE_MS, MAX_DELAY_MS);
}

/** The outcome of an attempt that the pool's close kept from running. */
function closedOutcome(): ActivityOutcome {
  return { ok: false, failure: toFailure(new EngineClosedError()), startedAt: Date.now(), durationMs: 0 };
}

function threadFailure(error: unknown, startedAt: number): ActivityOutcome {
  return {
    ok: false,
    failure: { ...toFailure(error), name: 'ActivityThreadError', code: ErrorCode.ActivityThread },
    startedAt,
    durationMs: Date.now() - startedAt,
  };
}

/**
 * Runs activity attempts: in Piscina worker threads for the activities module, on the engine
 * thread for inline activities. Every submitted attempt ends in exactly one call of `onOutcome`
 * with the task it was submitted with (no promise per attempt on the hot path); an abandoned one
 * (see `abandon`) with no outcome.
 *
 * Attempts wait in a queue here and go to the threads in batches, as many as there are free
 * slots (threads × concurrency), one Piscina task per batch: a Piscina dispatch costs tens of
 * microseconds, so one per attempt would dominate trivial activities. A batch is split over the
 * threads, except that attempts which are on average cheaper than a wake-up go to as few threads
 * as it takes to give each at least MIN_CHEAP_BATCH of them. Outcomes come back grouped per
 * thread tick on a BroadcastChannel, and those ready when a batch ends with Piscina's reply to
 * it.
 *
 * An attempt with a timeout is batched too, and times out in its thread (its signal aborts). A
 * thread that stays blocked past the timeout and a grace cannot say so: the pool terminates it.
 * When a batch thread dies or is terminated (Piscina replaces it), the unreported attempts of a
 * batch it had started run again, each alone, uncharged: they shared the thread with whatever
 * killed or blocked it and cannot be blamed for it. A batch it is known not to have started is
 * queued again under new ids. Batches waiting in Piscina's queue for a thread (one starting, or
 * the replacement) count their attempts as queued, not running (see BatchQueue).
 *
 * Attempts that run alone (those survivors, and an activity whose last attempt killed or blocked
 * its thread) go to a second Piscina pool of single-attempt threads, started when needed: there a
 * thread holds one attempt, so a crash or a block names its culprit and is reported, and Piscina
 * terminates the thread of one that blocks past its timeout. They wait in this pool's own queue
 * for one of ALONE_THREADS_PER_THREAD × threads slots (Piscina's queue stalls for good when the
 * threads ahead of it die), and never wait for the batch threads to empty, nor hold them up.
 * `close()` settles every attempt not yet started with EngineClosedError.
 */
export class ActivityPool<T extends PoolTask = PoolTask> {
  readonly #piscina: Piscina | undefined;
  /** Piscina's queue of batches, which counts the attempts in them. */
  readonly #batchQueue: BatchQueue;
  readonly #onOutcome: (task: T, outcome: ActivityOutcome | undefined, workflowName: string) => void;
  readonly #inline: Readonly<Record<string, ActivityFunction>>;
  readonly #closing = new AbortController();
  readonly #closeChannel: BroadcastChannel;
  readonly #results: BroadcastChannel;
  /**
   * Attempts running alone with a timeout, waiting to hear that their thread started them, by
   * start id: their hard deadline is armed then.
   */
  readonly #onStarted = new Map<number, () => void>();
  readonly #threadNames: ReadonlySet<string>;
  readonly #capacity: number;
  /** Attempts one thread runs at once: also the most one batch holds. */
  readonly #perThread: number;
  readonly #codec: JsonCodec;
  readonly #waiting: Pending<T>[] = [];
  readonly #running = new Map<number, Pending<T>>();
  /** Hard deadlines of batched attempts with a timeout, armed when their batch starts. */
  readonly #hardDeadlines = new Map<number, NodeJS.Timeout>();
  /**
   * Batches with attempts that have a timeout, by their first attempt's id; `isStarted` once a
   * thread said it took one. Others say nothing (it would cost every step) and count as started.
   */
  readonly #batches = new Map<number, { isStarted: boolean }>();
  /** Batch threads being terminated for a block (a second deadline must not terminate again). */
  readonly #terminating = new Set<number>();
  /** Single-attempt threads for attempts that run alone. */
  readonly #isolated: Piscina | undefined;
  #nextId = 1;
  /** Moving average of attempt durations; none yet means nothing is known to be cheap. */
  #meanAttemptMs: number | undefined;
  #batchesSent = 0;
  #isPumpScheduled = false;
  #inlineRunning = 0;
  /**
   * Every stop `abandon` made: it tells which attempts are abandoned (see `#isAbandoned`), and
   * aborts the signals of inline ones, as each thread's own does for its attempts.
   */
  readonly #stopped = new AttemptStops();
  /** Short names of the workflow names attempts were submitted for (see `AttemptStops`). */
  readonly #groups = new Map<string, string>();
  /** Every stop sent to the threads, by group: sent again to each thread that starts later. */
  readonly #stops = new Map<string, [group: string, maxId: number, workflowName: string]>();
  /** Attempts handed to the single-attempt pool: never more than it has threads. */
  #aloneInThreads = 0;
  /** The single-attempt pool's most threads (see `create`). */
  readonly #aloneLimit: number;
  /** Attempts waiting for a single-attempt thread: told whether they may run (not when closing). */
  readonly #aloneWaiting: { pending: Pending<T>; tell: (mayRun: boolean) => void }[] = [];
  /** Threads listening for the close (each said it was ready), by thread id; some may be gone. */
  readonly #readyThreads: Set<number>;
  /** While closing: hears each thread that aborted its attempts' signals. */
  #onThreadClosed: ((thread: number) => void) | undefined;

  private constructor(
    piscina: Piscina | undefined,
    batchQueue: BatchQueue,
    isolated: Piscina | undefined,
    options: ActivityPoolOptions,
    closeChannel: BroadcastChannel,
    results: BroadcastChannel,
    threadNames: ReadonlySet<string>,
    onOutcome: (task: T, outcome: ActivityOutcome | undefined, workflowName: string) => void,
    readyThreads: Set<number>,
  ) {
    this.#piscina = piscina;
    this.#batchQueue = batchQueue;
    this.#isolated = isolated;
    this.#onOutcome = onOutcome;
    this.#inline = options.inline;
    this.#closeChannel = closeChannel;
    this.#results = results;
    this.#threadNames = threadNames;
    this.#capacity = options.threads * options.concurrencyPerThread;
    this.#perThread = options.concurrencyPerThread;
    this.#aloneLimit = isolated?.options.maxThreads ?? 0;
    this.#codec = new JsonCodec(options.maxPayloadBytes);
    this.#readyThreads = readyThreads;
    // Every inline attempt in flight listens on the closing signal.
    setMaxListeners(0, this.#closing.signal);
    results.onmessage = (event) => {
      const data = (event as { data: BatchedOutcome[] | { started: number } | { ready: number } | { closed: number } | BatchStarted })
        .data;
      if (Array.isArray(data)) this.#onOutcomes(data);
      else if ('started' in data) this.#onStarted.get(data.started)?.();
      else if ('ready' in data) this.#onThreadReady(data.ready);
      else if ('closed' in data) this.#onThreadClosed?.(data.closed);
      else this.#onBatchStarted(data);
    };
  }

  /** Starts the threads and checks that the module loads and exports functions. */
  static async create<T extends PoolTask>(
    options: ActivityPoolOptions,
    onOutcome: (task: T, outcome: ActivityOutcome | undefined, workflowName: string) => void,
    onThreadError: (error: unknown) => void,
  ): Promise<ActivityPool<T>> {
    const id = randomUUID();
    const closeChannel = new BroadcastChannel(`duraflow-close-${id}`);
    const results = new BroadcastChannel(`duraflow-results-${id}`);
    // Threads say they are ready as they start, before the pool exists: a broadcast nobody listens
    // to is lost, and close() must know which threads to wait for.
    const readyThreads = new Set<number>();
    results.onmessage = (event) => {
      const data = (event as { data: unknown }).data as { ready?: number };
      if (typeof data.ready === 'number') readyThreads.add(data.ready);
    };
    const batchQueue = new BatchQueue();
    if (!options.moduleUrl) {
      return new ActivityPool(undefined, batchQueue, undefined, options, closeChannel, results, new Set(), onOutcome, readyThreads);
    }
    const threads = {
      filename: new URL('./activity-thread-entry.cjs', import.meta.url).href,
      workerData: {
        moduleUrl: options.moduleUrl.href,
        closeChannel: `duraflow-close-${id}`,
        resultsChannel: `duraflow-results-${id}`,
        maxPayloadBytes: options.maxPayloadBytes,
      },
      ...(options.maxHeapMb ? { resourceLimits: { maxOldGenerationSizeMb: options.maxHeapMb } } : {}),
      // Piscina's own run and wait histograms: a clock read and a record per batch on both sides,
      // which nothing reads (the engine measures attempts itself).
      recordTiming: false,
    };
    const piscina = new Piscina({
      ...threads,
      minThreads: options.threads,
      maxThreads: options.threads,
      // The pool bounds attempts itself; Piscina only has to accept the batches.
      concurrentTasksPerWorker: options.concurrencyPerThread,
      idleTimeout: 60_000,
      taskQueue: batchQueue,
    });
    const isolated = new Piscina({
      ...threads,
      minThreads: 0,
      maxThreads: options.threads * ALONE_THREADS_PER_THREAD,
      concurrentTasksPerWorker: 1,
      idleTimeout: 30_000,
    });
    // A thread that fails to start (or dies between tasks) emits 'error' on its pool; unheard, it
    // would take the process down. Piscina replaces a batch thread (the single-attempt pool has no
    // minimum, so it starts one when the next attempt comes); attempts on it report themselves.
    piscina.on('error', (error: unknown) => onThreadError(error));
    isolated.on('error', (error: unknown) => onThreadError(error));
    const fail = async (error: ConfigurationError): Promise<never> => {
      closeChannel.close();
      results.close();
      await Promise.all([piscina.destroy(), isolated.destroy()]);
      throw error;
    };
    let names: string[];
    try {
      names = (await piscina.run(undefined, { name: 'describe' })) as string[];
    } catch (error) {
      return fail(
        new ConfigurationError(
          `activities module ${options.moduleUrl.href} could not be loaded: ${(error as Error).message}`,
          { cause: error },
        ),
      );
    }
    if (names.length === 0) {
      return fail(new ConfigurationError(`activities module ${options.moduleUrl.href} exports no functions`));
    }
    return new ActivityPool(piscina, batchQueue, isolated, options, closeChannel, results, new Set(names), onOutcome, readyThreads);
  }

  /**
   * Attempts waiting: for a free slot, or, sent in a batch, in Piscina's queue for a batch thread
   * (one starting, or replacing one that died).
   */
  get queued(): number {
    return this.#waiting.length + this.#batchQueue.attempts + this.#aloneWaiting.length;
  }

  /** Batches sent to the threads so far (each a thread wake-up). */
  get batchesSent(): number {
    return this.#batchesSent;
  }

  /**
   * Attempts running now, in threads and inline. One alone runs from when it has its slot, the
   * single-attempt thread started for it included.
   */
  get running(): number {
    return this.#running.size - this.#batchQueue.attempts + this.#aloneInThreads + this.#inlineRunning;
  }

  /**
   * Runs one attempt of `task`, a task of a workflow named `workflowName`; `timeoutMs` is its
   * startToCloseTimeoutMs, if any. `isolate` runs it alone on a thread (for an activity that killed
   * or blocked its thread before).
   */
  submit(task: T, workflowName: string, timeoutMs: number | undefined, isolate = false): void {
    const inline = Object.hasOwn(this.#inline, task.name) ? this.#inline[task.name] : undefined;
    if (!inline && (!this.#piscina || !this.#threadNames.has(task.name))) {
      const failure = unknownActivityFailure(task.name);
      queueMicrotask(() => this.#onOutcome(task, { ok: false, failure, startedAt: Date.now(), durationMs: 0 }, workflowName));
      return;
    }
    let group = this.#groups.get(workflowName);
    if (group === undefined) this.#groups.set(workflowName, (group = this.#groups.size.toString(36)));
    const pending: Pending<T> = { id: this.#nextId++, task, workflowName, group, timeoutMs };
    if (inline) {
      void this.#runInline(inline, pending);
    } else if (isolate) {
      void this.#runAlone(pending);
    } else {
      this.#waiting.push(pending);
      this.#schedulePump();
    }
  }

  /**
   * Stops the attempts of workflows named in `workflowNames`, which another engine took over:
   * queued ones never start, and running ones see their signal abort with NameTakenOverError.
   * Each is reported with no outcome (a running one once it ended): its end is the new holder's
   * to record, by running the activity again.
   */
  abandon(workflowNames: ReadonlySet<string>): void {
    // Every attempt of these names so far: ids only grow.
    const maxId = this.#nextId - 1;
    for (const name of workflowNames) {
      const group = this.#groups.get(name);
      if (group === undefined) continue;
      this.#stops.set(group, [group, maxId, name]);
      this.#stopped.stop(group, maxId, new NameTakenOverError(name));
    }
    this.#sendStops();
    const isTheirs = (p: Pending<T>): boolean => workflowNames.has(p.workflowName);
    const queued: Pending<T>[] = [];
    let kept = 0;
    for (const p of this.#waiting) {
      if (isTheirs(p)) queued.push(p);
      else this.#waiting[kept++] = p;
    }
    this.#waiting.length = kept;
    // Those waiting for a single-attempt slot are told now that they may not run; running ones
    // are reported with no outcome once they end (#report).
    const toldOff: ((mayRun: boolean) => void)[] = [];
    kept = 0;
    for (const waiting of this.#aloneWaiting) {
      if (isTheirs(waiting.pending)) toldOff.push(waiting.tell);
      else this.#aloneWaiting[kept++] = waiting;
    }
    this.#aloneWaiting.length = kept;
    for (const tell of toldOff) tell(false);
    for (const p of queued) this.#onOutcome(p.task, undefined, p.workflowName);
  }

  /** Tells every thread (those that started since too) which attempts are to stop. */
  #sendStops(): void {
    if (this.#stops.size > 0) this.#closeChannel.postMessage({ stop: [...this.#stops.values()] } satisfies ThreadControl);
  }

  /** Whether `abandon` stopped the attempt: ids only grow, so a stop covers every attempt made before it. */
  #isAbandoned(pending: Pending<T>): boolean {
    return this.#stopped.reasonFor(pending.id, pending.group) !== undefined;
  }

  /** Reports the end of an attempt: its outcome, or none if it was abandoned. */
  #report(pending: Pending<T>, outcome: ActivityOutcome): void {
    this.#onOutcome(pending.task, this.#isAbandoned(pending) ? undefined : outcome, pending.workflowName);
  }

  /**
   * Settles attempts not yet started with an EngineClosedError outcome, aborts running ones (their
   * signals fire), and stops both thread pools.
   */
  async close(): Promise<void> {
    this.#closing.abort(new EngineClosedError());
    for (const p of this.#waiting.splice(0)) this.#report(p, closedOutcome());
    for (const { tell } of this.#aloneWaiting.splice(0)) tell(false);
    for (const timer of this.#hardDeadlines.values()) clearTimeout(timer);
    this.#hardDeadlines.clear();
    this.#closeChannel.postMessage('close' satisfies ThreadControl);
    this.#closeChannel.close();
    await this.#threadsAborted();
    this.#results.close();
    await Promise.all([this.#piscina?.destroy(), this.#isolated?.destroy()]);
  }

  /** The threads that exist now (batch and single-attempt), by thread id. */
  #liveThreads(): Set<number> {
    return new Set([...(this.#piscina?.threads ?? []), ...(this.#isolated?.threads ?? [])].map((w) => w.threadId));
  }

  /** A thread listens for the close and for stops now: it hears every stop so far. */
  #onThreadReady(thread: number): void {
    this.#readyThreads.add(thread);
    // Replaced threads never say goodbye: forget them, so the set stays as small as the pools.
    if (this.#readyThreads.size > this.#capacity / this.#perThread + this.#aloneLimit) {
      const live = this.#liveThreads();
      for (const id of this.#readyThreads) if (!live.has(id)) this.#readyThreads.delete(id);
    }
    this.#sendStops();
  }

  /**
   * Waits until every thread that may run attempts has aborted their signals on the close (at
   * most HARD_TIMEOUT_GRACE_MS: a blocked thread never answers). Terminated before that, a
   * thread's activities would never see their signals abort.
   */
  async #threadsAborted(): Promise<void> {
    if (this.#running.size === 0 && this.#aloneInThreads === 0) return;
    const live = this.#liveThreads();
    const waiting = new Set([...this.#readyThreads].filter((id) => live.has(id)));
    if (waiting.size === 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, HARD_TIMEOUT_GRACE_MS);
      this.#onThreadClosed = (thread) => {
        if (!waiting.delete(thread) || waiting.size > 0) return;
        clearTimeout(timer);
        resolve();
      };
    });
    this.#onThreadClosed = undefined;
  }

  async #runInline(fn: ActivityFunction, pending: Pending<T>): Promise<void> {
    this.#inlineRunning++;
    const attempt = toActivityTask(pending);
    let outcome: ActivityOutcome;
    try {
      // The activity is user code, and `runAttempt` calls it at once: it must not run on the
      // engine's stack (a commit's callbacks submit attempts), so it waits for that to unwind.
      await Promise.resolve();
      outcome = await runAttempt(fn, attempt, decodeInput(attempt), this.#closing.signal, this.#codec, this.#stopped);
    } catch (error) {
      outcome = { ok: false, failure: toFailure(error), startedAt: Date.now(), durationMs: 0 };
    } finally {
      this.#inlineRunning--;
    }
    this.#report(pending, outcome);
  }

  /**
   * Runs an attempt alone on a single-attempt thread: the survivors of a batch thread that died,
   * so the next crash names its culprit, and an activity that killed or blocked its thread before.
   */
  async #runAlone(pending: Pending<T>): Promise<void> {
    const { task, timeoutMs } = pending;
    const isolated = this.#isolated!;
    // Piscina would queue the rest itself, but a thread of a pool with no minimum that dies does
    // not wake that queue: an attempt queued behind crashing ones would wait for good. A slot is
    // passed on, not given back, so none is taken twice.
    if (this.#aloneInThreads < this.#aloneLimit) this.#aloneInThreads++;
    else if (!(await new Promise<boolean>((tell) => this.#aloneWaiting.push({ pending, tell })))) {
      this.#report(pending, closedOutcome());
      return;
    }
    // Handed a slot as the pool closed (by an outcome that closed it, say), or abandoned while it
    // waited for one: it runs no more.
    if (this.#closing.signal.aborted || this.#isAbandoned(pending)) {
      this.#passAloneSlot();
      this.#report(pending, closedOutcome());
      return;
    }
    // The hard deadline runs from the attempt's start in its thread (which says so), not from
    // here: waiting for a free thread is not the attempt's time.
    let deadline: AbortController | undefined;
    let startId: number | undefined;
    let timer: NodeJS.Timeout | undefined;
    // Not the close's signal: Piscina would terminate the thread before the attempt saw its own
    // signal abort (close() terminates it once it has).
    let signal: AbortSignal | undefined;
    let isSettled = false;
    if (timeoutMs !== undefined) {
      const hard = (deadline = new AbortController());
      startId = this.#nextId++;
      this.#onStarted.set(startId, () => {
        // As on the batch path: an outcome waiting to be read after a busy turn is read first.
        const check = (): void => {
          setImmediate(() => {
            if (!isSettled) hard.abort();
          });
        };
        timer = setTimeout(check, hardDeadlineMs(timeoutMs));
      });
      signal = hard.signal;
    }
    const startedAt = Date.now();
    let outcome: ActivityOutcome;
    try {
      outcome = (await isolated.run(toActivityTask(pending, startId), { signal })) as ActivityOutcome;
    } catch (error) {
      outcome = deadline?.signal.aborted
        ? // It kept its thread busy past the timeout: Piscina terminated the thread.
          {
            ok: false,
            failure: toFailure(
              Object.assign(
                new TimeoutError(
                  `activity "${task.name}" attempt ${task.attempt} exceeded startToCloseTimeoutMs (${timeoutMs} ms); its thread was terminated`,
                ),
                { details: { threadTerminated: true } },
              ),
            ),
            startedAt,
            durationMs: Date.now() - startedAt,
          }
        : // The thread died under it (exit, out of memory).
          threadFailure(error, startedAt);
    } finally {
      isSettled = true;
      clearTimeout(timer);
      if (startId !== undefined) this.#onStarted.delete(startId);
      this.#passAloneSlot();
    }
    this.#report(pending, outcome);
  }

  /** Hands a single-attempt slot to the next attempt waiting for one, or frees it. */
  #passAloneSlot(): void {
    const next = this.#aloneWaiting.shift();
    if (next) next.tell(true);
    else this.#aloneInThreads--;
  }

  #schedulePump(): void {
    if (this.#isPumpScheduled) return;
    this.#isPumpScheduled = true;
    // Busy: at the end of this turn, so every attempt released by this turn's commits and outcomes
    // joins the batches (a microtask would send a batch per commit or per group of outcomes). Idle
    // (no batch out, so no batch outcome to come this turn): once this commit's releases are done,
    // so a lone workflow's next attempt does not wait for a turn of the event loop.
    if (this.#running.size === 0) queueMicrotask(this.#scheduledPump);
    else setImmediate(this.#scheduledPump);
  }

  /** The pump as scheduled: made once, not per scheduling. */
  readonly #scheduledPump = (): void => {
    this.#isPumpScheduled = false;
    this.#pump();
  };

  #pump(): void {
    const piscina = this.#piscina;
    if (!piscina || this.#closing.signal.aborted) return;
    const free = Math.min(this.#capacity - this.#running.size, this.#waiting.length);
    if (free <= 0) return;
    const taken = this.#waiting.splice(0, free);
    const threads = piscina.threads.length || 1;
    const fewest = this.#meanAttemptMs !== undefined && this.#meanAttemptMs < CHEAP_ATTEMPT_MS ? MIN_CHEAP_BATCH : 1;
    const size = Math.min(this.#perThread, Math.max(fewest, Math.ceil(taken.length / threads)));
    for (let i = 0; i < taken.length; i += size) {
      const batch = taken.slice(i, i + size);
      for (const p of batch) this.#running.set(p.id, p);
      // One string per batch: cloning it into the thread is a copy, where an array of task
      // objects would be cloned field by field. Inputs are JSON already and are spliced in. Its
      // size goes beside it, under a symbol key that stays on this thread, for Piscina's queue.
      // Joined, not concatenated: a string built by `+=` is a tree of pieces that postMessage
      // must flatten first, which cost more than the rest of the post put together.
      const tasks = batch.map(
        ({ id, task, timeoutMs, group }) =>
          `[${id},${quotedName(task.name)},${JSON.stringify(task.workflowId)},${task.commandId},${task.attempt},${timeoutMs ?? 'null'},"${group}"${task.input === undefined ? '' : `,${task.input}`}]`,
      );
      this.#batchesSent++;
      const first = batch[0]!.id;
      const sent = { isStarted: !batch.some((p) => p.timeoutMs !== undefined) };
      if (!sent.isStarted) this.#batches.set(first, sent);
      const task: BatchTask = { text: `[${tasks.join(',')}]`, [queueOptionsSymbol]: { attempts: batch.length } };
      piscina.run(task, { name: 'runBatch' }).then(
        (outcomes: BatchedOutcome[]) => {
          this.#batches.delete(first);
          this.#onOutcomes(outcomes);
        },
        () => {
          // The thread died, or the pool terminated it for a block. Outcomes, and word that it
          // started the batch, posted just before may still be on their way. A batch it is known
          // not to have started is sent again as it was, under new ids (word about the old ones
          // may still come); the attempts of any other, without an outcome, shared the thread
          // with whatever killed or blocked it and cannot be blamed for it: each runs again,
          // alone, so that a crash or a block there is its own.
          setImmediate(() => {
            this.#batches.delete(first);
            const again: Pending<T>[] = [];
            for (const p of batch) {
              if (!this.#running.delete(p.id)) continue;
              this.#disarmHardDeadline(p.id);
              if (this.#closing.signal.aborted || this.#isAbandoned(p)) this.#report(p, closedOutcome());
              else if (sent.isStarted) void this.#runAlone(p);
              else again.push({ ...p, id: this.#nextId++ });
            }
            this.#waiting.unshift(...again);
            this.#schedulePump();
          });
        },
      );
    }
  }

  /**
   * A batch with attempts that have a timeout started on `thread`: marks it started (a death now
   * runs its attempts again alone rather than queueing it again) and arms each one's hard
   * deadline. Should one neither end nor time out by then, the thread's event loop is blocked: it
   * is terminated, and its batches fail over to the path for a thread that died.
   */
  #onBatchStarted({ batchStarted, timed, thread }: BatchStarted): void {
    const sent = this.#batches.get(batchStarted);
    if (sent) sent.isStarted = true;
    for (const id of timed) {
      const pending = this.#running.get(id);
      if (pending?.timeoutMs === undefined || this.#hardDeadlines.has(id)) continue;
      const timer = setTimeout(() => {
        this.#hardDeadlines.delete(id);
        // Outcomes that arrived while this engine's thread was busy are read before timers run
        // again only after a turn: the check waits for it, so a late look cannot kill a thread
        // that answered in time.
        setImmediate(() => this.#terminateIfBlocked(id, thread));
      }, hardDeadlineMs(pending.timeoutMs));
      this.#hardDeadlines.set(id, timer);
    }
  }

  #terminateIfBlocked(id: number, thread: number): void {
    if (!this.#running.has(id) || this.#closing.signal.aborted || this.#terminating.has(thread)) return;
    const workers = this.#piscina?.threads ?? [];
    const worker = workers.find((w) => w.threadId === thread);
    if (!worker) return;
    // Forget threads that are gone, so the set stays as small as the pool.
    for (const gone of this.#terminating) if (!workers.some((w) => w.threadId === gone)) this.#terminating.delete(gone);
    this.#terminating.add(thread);
    void worker.terminate();
  }

  #disarmHardDeadline(id: number): void {
    const timer = this.#hardDeadlines.get(id);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.#hardDeadlines.delete(id);
  }

  #onOutcomes(outcomes: BatchedOutcome[]): void {
    for (const [id, isOk, startedAt, durationMs, payload, retryAt] of outcomes) {
      const pending = this.#running.get(id);
      if (!pending) continue;
      this.#running.delete(id);
      if (pending.timeoutMs !== undefined) this.#disarmHardDeadline(id);
      this.#meanAttemptMs = this.#meanAttemptMs === undefined ? durationMs : this.#meanAttemptMs + (durationMs - this.#meanAttemptMs) / 16;
      if (isOk) {
        this.#report(pending, { ok: true, result: payload as string | undefined, startedAt, durationMs });
      } else {
        const failure = payload as Extract<ActivityOutcome, { ok: false }>['failure'];
        this.#report(
          pending,
          retryAt === undefined
            ? { ok: false, failure, startedAt, durationMs }
            : { ok: false, failure, retryAt, startedAt, durationMs },
        );
      }
    }
    if (this.#waiting.length > 0) this.#schedulePump();
  }
}
