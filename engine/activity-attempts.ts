import type { ActorMessage } from '../actors/messages.js';
import type { EngineMetrics } from '../metrics/engine-metrics.js';
import type { TaskRow } from '../storage/rows.js';
import type { ActivityOutcome } from './activity-context.js';
import { type ActivityPool, mustRunAlone } from './activity-pool.js';
import { ErrorCode } from './errors.js';
import type { SerializedFailure } from './failure.js';
import { InFlightTasks } from './in-flight-tasks.js';
import {
  type ActivityOptions,
  nextAttemptAt,
  parseActivityOptions,
  type ResolvedRetryPolicy,
  resolveRetryPolicy,
} from './retry-policy.js';

/** How an attempt ended, as the pool reports it: the activity completed, will be retried, or failed. */
export type AttemptOutcome = Extract<ActorMessage, { type: 'activityCompleted' | 'activityRetry' | 'activityFailed' }>;

/**
 * The `activity` label of attempts of names no activity has: workflow code can call any name
 * (`acts[fromInput]()`), and a label value per name would grow the metrics without bound.
 */
const UNKNOWN_ACTIVITY_LABEL = '(unknown)';

/** The `activity` label of an attempt of `name` that failed with `failure`. */
function labelOf(name: string, failure: SerializedFailure): string {
  return failure.code === ErrorCode.UnknownActivity ? UNKNOWN_ACTIVITY_LABEL : name;
}

/**
 * The engine's side of activity attempts: it starts each on the pool once (a task found again by
 * a poll or a recovery while its attempt runs is not started twice), and turns how each ended
 * into what its workflow's actor takes: completed, retried (with the next attempt's task row), or
 * failed for good, as the retry policy decides; each attempt counted in the metrics (a failure
 * for good once the step that records it commits).
 */
export class ActivityAttempts {
  readonly #pool: ActivityPool<TaskRow>;
  readonly #retry: ResolvedRetryPolicy;
  readonly #m: EngineMetrics;
  /** Activity attempts handed to the pool and not yet reported back. */
  readonly #inFlight = new InFlightTasks();
  readonly #parsedOptions = new Map<string, ActivityOptions>();

  /** `retry` is the engine's policy, which each activity's options may override. */
  constructor(pool: ActivityPool<TaskRow>, retry: ResolvedRetryPolicy, metrics: EngineMetrics) {
    this.#pool = pool;
    this.#retry = retry;
    this.#m = metrics;
  }

  /** Starts the attempt of `task` on the pool, unless it runs already. */
  start(workflowName: string, task: TaskRow): void {
    if (!this.#inFlight.add(task.workflowId, task.commandId)) return;
    this.#pool.submit(task, workflowName, this.#activityOptions(task.options).startToCloseTimeoutMs, mustRunAlone(task.lastFailure));
  }

  /** Whether an attempt of the task runs now. */
  isRunning(workflowId: string, commandId: number): boolean {
    return this.#inFlight.has(workflowId, commandId);
  }

  /** The pool reported the attempt of `task` back (whatever its outcome). */
  ended(task: TaskRow): void {
    this.#inFlight.delete(task.workflowId, task.commandId);
  }

  /** What the workflow's actor takes for `outcome`, the end of the attempt of `task`; counts the attempt. */
  messageFor(task: TaskRow, outcome: ActivityOutcome): AttemptOutcome {
    const { commandId, attempt } = task;
    const label = outcome.ok ? task.name : labelOf(task.name, outcome.failure);
    const scheduleToStart = Math.max(0, outcome.startedAt - task.visibleAt) / 1000;
    const run = outcome.durationMs / 1000;
    if (outcome.ok) {
      this.#m.activityAttempted(label, 'completed', scheduleToStart, run);
      return { type: 'activityCompleted', commandId, result: outcome.result, attempts: attempt };
    }
    const options = this.#activityOptions(task.options);
    const policy = resolveRetryPolicy(this.#retry, options.retry);
    const next = nextAttemptAt(policy, attempt, outcome.failure, Date.now(), outcome.retryAt);
    if (next === undefined) {
      this.#m.activityAttempted(label, 'failed', scheduleToStart, run);
      return { type: 'activityFailed', commandId, failure: outcome.failure, attempts: attempt };
    }
    this.#m.activityAttempted(label, 'retried', scheduleToStart, run);
    const retry: TaskRow = { ...task, attempt: attempt + 1, visibleAt: next, lastFailure: JSON.stringify(outcome.failure) };
    return { type: 'activityRetry', commandId, task: retry };
  }

  /** A step that records the failure for good of `activityName` committed: counts it. */
  failureStored(activityName: string, failure: SerializedFailure): void {
    this.#m.activityFailed(labelOf(activityName, failure));
  }

  /** Parsed activity options; workflows reuse a handful of option sets, so parse each once. */
  #activityOptions(json: string): ActivityOptions {
    let options = this.#parsedOptions.get(json);
    if (!options) {
      options = parseActivityOptions(json);
      if (this.#parsedOptions.size < 1000) this.#parsedOptions.set(json, options);
    }
    return options;
  }
}
