import type { ActivityContext, ActivityOutcome, ActivityTask } from './activity-context.js';
import type { JsonCodec } from './codec.js';
import { TimeoutError } from './errors.js';
import { toFailure } from './failure.js';
import { checkDurationMs, checkEpochMs } from './validate.js';

/** An activity function as users write it. */
export type ActivityFunction = (input: never, ctx: ActivityContext) => unknown;

/**
 * Stops attempts from outside their code when another engine took over their workflow's name:
 * every attempt of that name with an id up to a bound (the pool's ids grow, so the attempts made
 * before the takeover). A stop is kept per name, not per attempt, so it applies to attempts that
 * reach a thread after it as well as to those running, and what is kept stays as small as the
 * set of names. Nothing is kept per attempt unless it reads its signal.
 */
export class AttemptStops {
  /** Per name stopped: the attempts up to `maxId` are stopped, for `reason`. */
  readonly #stopped = new Map<string, { maxId: number; reason: unknown }>();
  /** Signals of running attempts that read theirs, by attempt id. */
  readonly #signals = new Map<number, { group: string; controller: AbortController }>();

  /** Stops the attempts of `group` (a workflow name, or the pool's short name for it) up to `maxId`. */
  stop(group: string, maxId: number, reason: unknown): void {
    const known = this.#stopped.get(group);
    if (known && known.maxId >= maxId) return;
    this.#stopped.set(group, { maxId, reason });
    for (const [id, signal] of this.#signals) if (signal.group === group && id <= maxId) signal.controller.abort(reason);
  }

  /** Why attempt `id` of `group` is stopped, or undefined. */
  reasonFor(id: number, group: string): unknown {
    if (this.#stopped.size === 0) return undefined;
    const stopped = this.#stopped.get(group);
    return stopped && id <= stopped.maxId ? stopped.reason : undefined;
  }

  /** The attempt made its signal: a later stop aborts it. */
  watch(id: number, group: string, controller: AbortController): void {
    this.#signals.set(id, { group, controller });
  }

  ended(id: number): void {
    if (this.#signals.size > 0) this.#signals.delete(id);
  }
}

/** The decoded input of `task` (each attempt gets its own copy). */
export function decodeInput(task: ActivityTask): unknown {
  return task.input === undefined ? undefined : JSON.parse(task.input);
}

/**
 * What an attempt's code gets as its context. A class, not an object literal of closures: an
 * attempt is a few hundred bytes on the thread's heap that way, where closures over the attempt's
 * state cost as much again, and a thread runs tens of thousands of attempts a second. The signal
 * is made on first read, since most activities never read it.
 */
class AttemptContext implements ActivityContext {
  readonly workflowId: string;
  readonly activityId: string;
  readonly activityName: string;
  readonly attempt: number;
  readonly #id: number | undefined;
  readonly #group: string | undefined;
  readonly #closing: AbortSignal;
  /** Only for an attempt that can be stopped (one with a pool id and group). */
  readonly #stops: AttemptStops | undefined;
  #controller: AbortController | undefined;
  #onClose: (() => void) | undefined;
  #requestedAt: number | undefined;

  constructor(task: Omit<ActivityTask, 'input'>, closing: AbortSignal, stops: AttemptStops | undefined) {
    this.workflowId = task.workflowId;
    this.activityId = task.activityId;
    this.activityName = task.name;
    this.attempt = task.attempt;
    this.#id = task.id;
    this.#group = task.group;
    this.#closing = closing;
    this.#stops = stops;
  }

  get signal(): AbortSignal {
    return AttemptContext.controllerOf(this).signal;
  }

  // Getters that hand out a function bound to this attempt, not methods: an activity may take
  // them apart from the context (`async (input, { retryAfter }) => …`), and only one that reads
  // them pays for the function.
  get retryAfter(): (ms: number) => void {
    return (ms) => {
      this.#requestedAt = Date.now() + checkDurationMs(ms, 'retryAfter delay');
    };
  }

  get retryAt(): (at: Date | number) => void {
    return (at) => {
      this.#requestedAt = checkEpochMs(at, 'retryAt time');
    };
  }

  /**
   * The attempt's own controller, made on first use: listeners an activity adds to its signal go
   * away with the attempt instead of piling up on a signal that lives as long as the thread.
   * Static, so that nothing of it shows on the context the activity sees.
   */
  static controllerOf(ctx: AttemptContext): AbortController {
    if (ctx.#controller) return ctx.#controller;
    const controller = new AbortController();
    ctx.#controller = controller;
    const closing = ctx.#closing;
    if (closing.aborted) controller.abort(closing.reason);
    else {
      ctx.#onClose = () => controller.abort(closing.reason);
      closing.addEventListener('abort', ctx.#onClose, { once: true });
    }
    const stops = ctx.#stops;
    if (stops) {
      // A stop that came while the attempt ran without its signal applies now.
      const reason = stops.reasonFor(ctx.#id!, ctx.#group!);
      if (reason !== undefined) controller.abort(reason);
      else stops.watch(ctx.#id!, ctx.#group!, controller);
    }
    return controller;
  }

  /** When the attempt asked to be tried again, if it did. */
  static requestedAtOf(ctx: AttemptContext): number | undefined {
    return ctx.#requestedAt;
  }

  /** The attempt ended: what its signal hooked up is unhooked. */
  static release(ctx: AttemptContext): void {
    if (ctx.#onClose) ctx.#closing.removeEventListener('abort', ctx.#onClose);
    if (ctx.#stops) ctx.#stops.ended(ctx.#id!);
  }
}

/**
 * Runs one attempt of `fn` on `input` and turns whatever happens into an outcome: the JSON of its
 * result (checked like every other payload: JSON only, within the size limit; a result that is
 * not is a non-retryable failure), or its error as plain data with any retry time the activity
 * asked for. Never throws. Shared by the activity threads and inline activities so both behave
 * the same. An attempt that `stops` names (by `task.id`) before it begins does not run.
 */
export async function runAttempt(
  fn: ActivityFunction,
  task: Omit<ActivityTask, 'input'>,
  input: unknown,
  closing: AbortSignal,
  codec: JsonCodec,
  stops?: AttemptStops,
): Promise<ActivityOutcome> {
  const { id, group } = task;
  const isStoppable = stops !== undefined && id !== undefined && group !== undefined;
  if (isStoppable) {
    const reason = stops.reasonFor(id, group);
    if (reason !== undefined) return { ok: false, failure: toFailure(reason), startedAt: Date.now(), durationMs: 0 };
  }
  const ctx = new AttemptContext(task, closing, isStoppable ? stops : undefined);
  let timer: NodeJS.Timeout | undefined;
  const startedAt = Date.now();
  const began = performance.now();
  try {
    let value: unknown;
    try {
      // Called here, not in a callback: a synchronous throw is caught below all the same.
      const returned = fn(input as never, ctx);
      value =
        task.timeoutMs === undefined
          ? await returned
          : await Promise.race([
              returned,
              new Promise<never>((_, reject) => {
                timer = setTimeout(() => {
                  const error = new TimeoutError(
                    `activity "${task.name}" attempt ${task.attempt} exceeded startToCloseTimeoutMs (${task.timeoutMs} ms)`,
                  );
                  AttemptContext.controllerOf(ctx).abort(error);
                  reject(error);
                }, task.timeoutMs);
              }),
            ]);
    } catch (error) {
      const failure = toFailure(error);
      const durationMs = performance.now() - began;
      const retryAt = AttemptContext.requestedAtOf(ctx);
      return retryAt === undefined
        ? { ok: false, failure, startedAt, durationMs }
        : { ok: false, failure, retryAt, startedAt, durationMs };
    }
    const durationMs = performance.now() - began;
    try {
      return { ok: true, result: codec.encode(value, `result of activity "${task.name}"`), startedAt, durationMs };
    } catch (error) {
      return { ok: false, failure: { ...toFailure(error), nonRetryable: true }, startedAt, durationMs };
    }
  } finally {
    if (timer) clearTimeout(timer);
    AttemptContext.release(ctx);
  }
}
