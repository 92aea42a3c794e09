import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { BroadcastChannel } from 'node:worker_threads';

import { Piscina } from 'piscina';

import type { ActivityOutcome, ActivityTask } from './activity-context.js';
import { type ActivityFunction, runAttempt } from './activity-runner.js';
import { ConfigurationError, EngineClosedError } from './errors.js';
import { toFailure } from './failure.js';

/** Extra time a stuck thread gets past an attempt's timeout before it is terminated. */
const HARD_TIMEOUT_GRACE_MS = 1_000;

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
}

/**
 * Runs activity attempts: in Piscina worker threads for the activities module, on the engine
 * thread for inline activities. `run` always resolves with an outcome; a thread that crashes or
 * hangs past its timeout becomes a failed (retryable) attempt and Piscina replaces the thread.
 */
export class ActivityPool {
  readonly #piscina: Piscina | undefined;
  readonly #inline: Readonly<Record<string, ActivityFunction>>;
  readonly #closing = new AbortController();
  readonly #closeChannel: BroadcastChannel;
  readonly #threadNames: ReadonlySet<string>;
  #inlineRunning = 0;
  /** Attempts handed to Piscina and not finished: queued there or running. */
  #inThreads = 0;

  private constructor(
    piscina: Piscina | undefined,
    inline: Readonly<Record<string, ActivityFunction>>,
    closeChannel: BroadcastChannel,
    threadNames: ReadonlySet<string>,
  ) {
    this.#piscina = piscina;
    this.#inline = inline;
    this.#closeChannel = closeChannel;
    this.#threadNames = threadNames;
    // Every attempt in flight listens on the closing signal.
    setMaxListeners(0, this.#closing.signal);
  }

  /** Starts the threads and checks that the module loads and exports functions. */
  static async create(options: ActivityPoolOptions): Promise<ActivityPool> {
    const channelName = `duraflow-close-${randomUUID()}`;
    const closeChannel = new BroadcastChannel(channelName);
    if (!options.moduleUrl) return new ActivityPool(undefined, options.inline, closeChannel, new Set());
    const piscina = new Piscina({
      filename: new URL('./activity-thread.js', import.meta.url).href,
      workerData: { moduleUrl: options.moduleUrl.href, closeChannel: channelName },
      minThreads: options.threads,
      maxThreads: options.threads,
      concurrentTasksPerWorker: options.concurrencyPerThread,
      idleTimeout: 60_000,
      ...(options.maxHeapMb ? { resourceLimits: { maxOldGenerationSizeMb: options.maxHeapMb } } : {}),
    });
    let names: string[];
    try {
      names = (await piscina.run(undefined, { name: 'describe' })) as string[];
    } catch (error) {
      closeChannel.close();
      await piscina.destroy();
      throw new ConfigurationError(
        `activities module ${options.moduleUrl.href} could not be loaded: ${(error as Error).message}`,
        { cause: error },
      );
    }
    if (names.length === 0) {
      closeChannel.close();
      await piscina.destroy();
      throw new ConfigurationError(`activities module ${options.moduleUrl.href} exports no functions`);
    }
    return new ActivityPool(piscina, options.inline, closeChannel, new Set(names));
  }

  /** Attempts waiting for a free thread. */
  get queued(): number {
    return this.#piscina?.queueSize ?? 0;
  }

  /** Attempts running now, in threads and inline. */
  get running(): number {
    return this.#inThreads - this.queued + this.#inlineRunning;
  }

  /** Whether `name` is an activity this pool can run. */
  has(name: string): boolean {
    return Object.hasOwn(this.#inline, name) || this.#threadNames.has(name);
  }

  async run(task: ActivityTask): Promise<ActivityOutcome> {
    const inline = Object.hasOwn(this.#inline, task.name) ? this.#inline[task.name] : undefined;
    if (inline) {
      this.#inlineRunning++;
      try {
        return await runAttempt(inline, task, this.#closing.signal);
      } finally {
        this.#inlineRunning--;
      }
    }
    if (!this.#piscina || !this.#threadNames.has(task.name)) {
      return {
        ok: false,
        failure: {
          name: 'UnknownActivityError',
          message: `no activity is registered as ${JSON.stringify(task.name)}`,
          nonRetryable: true,
        },
        startedAt: Date.now(),
        durationMs: 0,
      };
    }
    // Piscina runs an abortable task alone on its thread (aborting terminates the thread), so
    // only attempts with a timeout get a signal: one that blocks its thread can then be killed.
    const options =
      task.timeoutMs === undefined
        ? {}
        : { signal: AbortSignal.any([this.#closing.signal, AbortSignal.timeout(task.timeoutMs + HARD_TIMEOUT_GRACE_MS)]) };
    this.#inThreads++;
    const startedAt = Date.now();
    try {
      return (await this.#piscina.run(task, options)) as ActivityOutcome;
    } catch (error) {
      // The thread died (exit, out of memory) or was terminated for ignoring its timeout.
      return {
        ok: false,
        failure: { ...toFailure(error), name: 'ActivityThreadError' },
        startedAt,
        durationMs: Date.now() - startedAt,
      };
    } finally {
      this.#inThreads--;
    }
  }

  /** Aborts every running attempt (their signals fire) and stops the threads. */
  async close(): Promise<void> {
    this.#closing.abort(new EngineClosedError());
    this.#closeChannel.postMessage('close');
    this.#closeChannel.close();
    await this.#piscina?.destroy();
  }
}
