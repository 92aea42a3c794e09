import type { ActivityContext, ActivityOutcome, ActivityTask } from './activity-context.js';
import type { JsonCodec } from './codec.js';
import { TimeoutError } from './errors.js';
import { toFailure } from './failure.js';
import { checkDurationMs, checkEpochMs } from './validate.js';

/** An activity function as users write it. */
export type ActivityFunction = (input: never, ctx: ActivityContext) => unknown;

/** The decoded input of `task` (each attempt gets its own copy). */
export function decodeInput(task: ActivityTask): unknown {
  return task.input === undefined ? undefined : JSON.parse(task.input);
}

/**
 * Runs one attempt of `fn` on `input` and turns whatever happens into an outcome: the JSON of its
 * result (checked like every other payload: JSON only, within the size limit; a result that is
 * not is a non-retryable failure), or its error as plain data with any retry time the activity
 * asked for. Never throws. Shared by the activity threads and inline activities so both behave
 * the same.
 */
export async function runAttempt(
  fn: ActivityFunction,
  task: Omit<ActivityTask, 'input'>,
  input: unknown,
  closing: AbortSignal,
  codec: JsonCodec,
): Promise<ActivityOutcome> {
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
  }
}
