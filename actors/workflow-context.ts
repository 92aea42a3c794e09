import type { ActivityOptions } from './commands.js';
import type { ReplayState } from './replay-state.js';
import { checkedDurationMs, checkedEpochMs, type TimeCheckErrors } from './time-checks.js';

/** Facts about the running workflow. */
export interface WorkflowInfo {
  workflowId: string;
  workflowName: string;
  version: string;
  /** When the workflow's first step ran. */
  startedAt: Date;
  /** True while the engine re-runs recorded steps to rebuild this workflow in memory. */
  isReplaying: boolean;
}

/**
 * The activity functions of a module, as a workflow calls them: same names, one input, a promise
 * of the result. Rejects with `ActivityFailure` when the activity fails for good.
 */
export type ActivityStubs<Module> = {
  [K in keyof Module as Module[K] extends (...args: never[]) => unknown ? K : never]: Module[K] extends (
    ...args: infer Args
  ) => infer Result
    ? (...input: Args extends [] ? [] : Args extends [infer Input, ...unknown[]] ? [input: Input] : []) => Promise<
        Awaited<Result>
      >
    : never;
};

/** Options of `ctx.waitForEvent`. */
export interface WaitForEventOptions {
  /** Give up after this many milliseconds with a `TimeoutError`. @default wait forever */
  timeoutMs?: number | undefined;
}

/**
 * What workflow code may use. Everything here is deterministic: replaying a workflow's history
 * runs the same code to the same commands, so workflow code must reach the outside world only
 * through this object (no `Date.now()`, `Math.random()`, timers or I/O of its own).
 */
export interface WorkflowContext {
  readonly info: WorkflowInfo;
  /**
   * Typed stubs for the engine's activities. Pass the activities module's type
   * (`ctx.activities<typeof import('./activities.js')>()`); each call schedules the activity
   * durably and resolves with its result.
   */
  activities<Module = Record<string, (input: unknown) => unknown>>(
    options?: ActivityOptions,
  ): ActivityStubs<Module>;
  /** The current step's time: the same value on every replay. */
  now(): Date;
  /** A number in [0, 1) from a generator seeded by the workflow id: the same on every replay. */
  random(): number;
  /** Records a variable (any JSON value) that `inspect` shows, from any process. */
  setVar(name: string, value: unknown): void;
  /** Sleeps on a durable timer for `ms` milliseconds. */
  sleep(ms: number): Promise<void>;
  /** Sleeps on a durable timer until `at` (a Date or epoch milliseconds). */
  sleepUntil(at: Date | number): Promise<void>;
  /**
   * Waits for the next event named `name` (one kept from earlier, if any). Rejects with
   * `TimeoutError` after `timeoutMs`.
   */
  waitForEvent<Payload = unknown>(name: string, options?: WaitForEventOptions): Promise<Payload>;
  /**
   * Calls `handler` for every event named `name`, including ones kept from before (registered
   * by a handler, from the event after the one being handled). It may be async; one that throws
   * or rejects fails the workflow.
   */
  onEvent<Payload = unknown>(name: string, handler: (payload: Payload) => void | Promise<void>): void;
}

/** A workflow: a deterministic async function of its context and input. */
export type WorkflowFunction<Input = never, Output = unknown> = (
  ctx: WorkflowContext,
  input: Input,
) => Promise<Output>;

/** The time checks' errors inside a workflow: JavaScript's own. */
const WORKFLOW_TIME_ERRORS: TimeCheckErrors = {
  wrongType: (message) => new TypeError(message),
  outOfRange: (message) => new RangeError(message),
};

const WAIT_FOR_EVENT_KEYS = ['timeoutMs'];

/** The WorkflowContext of one run, over its ReplayState. */
export class WorkflowContextImpl implements WorkflowContext {
  readonly #state: ReplayState;
  readonly #workflowId: string;
  readonly #workflowName: string;
  readonly #version: string;
  readonly #startedAt: number;

  /** `startedAt` is epoch ms: the Date is made when asked for, not kept per workflow. */
  constructor(state: ReplayState, workflowId: string, workflowName: string, version: string, startedAt: number) {
    this.#state = state;
    this.#workflowId = workflowId;
    this.#workflowName = workflowName;
    this.#version = version;
    this.#startedAt = startedAt;
  }

  get info(): WorkflowInfo {
    return {
      workflowId: this.#workflowId,
      workflowName: this.#workflowName,
      version: this.#version,
      startedAt: new Date(this.#startedAt),
      isReplaying: this.#state.isReplaying,
    };
  }

  activities<Module>(options: ActivityOptions = {}): ActivityStubs<Module> {
    const state = this.#state;
    const optionsJson = state.encodeActivityOptions(options);
    return new Proxy({} as ActivityStubs<Module>, {
      get(_target, name) {
        // `then` would make the stubs object look like a promise to `await`.
        if (typeof name !== 'string' || name === 'then') return undefined;
        return (input?: unknown) => state.scheduleActivity(name, input, optionsJson);
      },
    });
  }

  now(): Date {
    return new Date(this.#state.now);
  }

  random(): number {
    return this.#state.random();
  }

  setVar(name: string, value: unknown): void {
    this.#state.setVar(name, value);
  }

  sleep(ms: number): Promise<void> {
    return this.#state.startTimer(this.#state.now + checkedDurationMs(ms, this.#state.now, 'sleep duration', WORKFLOW_TIME_ERRORS));
  }

  sleepUntil(at: Date | number): Promise<void> {
    // A time already past fires at once; stored as now, it also stays within what Postgres holds.
    return this.#state.startTimer(Math.max(checkedEpochMs(at, 'sleepUntil time', WORKFLOW_TIME_ERRORS), this.#state.now));
  }

  waitForEvent<Payload>(name: string, options: WaitForEventOptions = {}): Promise<Payload> {
    this.#state.checkOptions(options, WAIT_FOR_EVENT_KEYS, 'waitForEvent options');
    const timeoutAt =
      options.timeoutMs === undefined
        ? undefined
        : this.#state.now + checkedDurationMs(options.timeoutMs, this.#state.now, 'timeoutMs', WORKFLOW_TIME_ERRORS);
    return this.#state.waitForEvent(name, timeoutAt) as Promise<Payload>;
  }

  onEvent<Payload>(name: string, handler: (payload: Payload) => void | Promise<void>): void {
    this.#state.onEvent(name, handler as (payload: unknown) => unknown);
  }
}
