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
  // A signal of its own per attempt: listeners an activity adds to it go away with the attempt
  // instead of piling up on a signal that lives as long as the thread. Made on first use, since
  // most activities never read it.
  let controller: AbortController | undefined;
  const onClose = (): void => controller!.abort(closing.reason);
  const attemptSignal = (): AbortController => {
    if (controller) return controller;
    controller = new AbortController();
    if (closing.aborted) onClose();
    else closing.addEventListener('abort', onClose, { once: true });
    if (isStoppable) {
      // A stop that came while the attempt ran without its signal applies now.
      const reason = stops.reasonFor(id, group);
      if (reason !== undefined) controller.abort(reason);
      else stops.watch(id, group, controller);
    }
    return controller;
  };
  let requestedAt: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  const startedAt = Date.now();
  const began = performance.now();
  const timing = (): { startedAt: number; durationMs: number } => ({ startedAt, durationMs: performance.now() - began });
  const ctx: ActivityContext = {
    workflowId: task.workflowId,
    activityId: task.activityId,
    activityName: task.name,
    attempt: task.attempt,
    get signal() {
      return attemptSignal().signal;
    },
    retryAfter(ms: number) {
      requestedAt = Date.now() + checkDurationMs(ms, 'retryAfter delay');
    },
    retryAt(at: Date | number) {
      requestedAt = checkEpochMs(at, 'retryAt time');
    },
  };
  try {
    const run = Promise.resolve().then(() => fn(input as never, ctx));
    const value =
      task.timeoutMs === undefined
        ? await run
        : await Promise.race([
            run,
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => {
                const error = new TimeoutError(
                  `activity "${task.name}" attempt ${task.attempt} exceeded startToCloseTimeoutMs (${task.timeoutMs} ms)`,
                );
                attemptSignal().abort(error);
                reject(error);
              }, task.timeoutMs);
            }),
          ]);
    let result: string | undefined;
    try {
      result = codec.encode(value, `result of activity "${task.name}"`);
    } catch (error) {
      return { ok: false, failure: { ...toFailure(error), nonRetryable: true }, ...timing() };
    }
    return { ok: true, result, ...timing() };
  } catch (error) {
    const failure = toFailure(error);
    return requestedAt === undefined
      ? { ok: false, failure, ...timing() }
      : { ok: false, failure, retryAt: requestedAt, ...timing() };
  } finally {
    if (timer) clearTimeout(timer);
    if (controller) closing.removeEventListener('abort', onClose);
    if (isStoppable) stops.ended(id);
  }
}
