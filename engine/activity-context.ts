/**
 * What an activity receives as its second argument. Created per attempt, in the activity's
 * thread (or on the engine thread for inline activities).
 */
export interface ActivityContext {
  readonly workflowId: string;
  /** Stable across retries and crashes: use it as an idempotency key. */
  readonly activityId: string;
  readonly activityName: string;
  /** 1 for the first try. */
  readonly attempt: number;
  /**
   * Aborted when the engine closes, when the attempt passes its `startToCloseTimeoutMs`, and when
   * another engine takes over the workflow's name (reason: `NameTakenOverError`).
   */
  readonly signal: AbortSignal;
  /**
   * If this attempt throws, run the next one `ms` milliseconds from now (overrides the backoff).
   * Throws InvalidArgumentError for a negative or non-finite delay, or one past a Date's range.
   */
  retryAfter(ms: number): void;
  /**
   * If this attempt throws, run the next one at `at` (overrides the backoff; a time past means
   * now). Throws InvalidArgumentError for an invalid Date or a time outside a Date's range.
   */
  retryAt(at: Date | number): void;
}

/** One attempt of one activity, as sent to a thread. */
export interface ActivityTask {
  name: string;
  /** JSON of the input; undefined for none. */
  input: string | undefined;
  workflowId: string;
  activityId: string;
  attempt: number;
  timeoutMs: number | undefined;
  /** Set when the pool must hear that a thread started the attempt (to arm its hard deadline). */
  startId?: number;
  /** The pool's id of the attempt and its workflow name's short name there, by which it can be stopped (see `AttemptStops`). */
  id?: number;
  group?: string;
}

/** When an attempt ran: its start (epoch ms) and how long it took. */
export interface AttemptTiming {
  startedAt: number;
  durationMs: number;
}

/** What an attempt produced. Never an exception: failures are data across the thread boundary. */
export type ActivityOutcome = AttemptTiming &
  (
    | { ok: true; result: string | undefined }
    | { ok: false; failure: import('../actors/history.js').SerializedFailure; retryAt?: number }
  );

/** The id of the activity scheduled by command `commandId` of `workflowId`. */
export function activityIdOf(workflowId: string, commandId: number): string {
  return `${workflowId}/${commandId}`;
}
