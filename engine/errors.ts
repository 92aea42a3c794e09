/**
 * Every error duraflow throws on purpose. Each has a stable `code`: check the code, not the
 * class, once an error may have crossed a thread (structured clone drops subclass identity).
 */

import type { SerializedFailure } from '../actors/history.js';
import { coerceError } from './failure.js';

/** Codes of duraflow's errors. */
export const ErrorCode = {
  NonRetryable: 'DURAFLOW_NON_RETRYABLE',
  ActivityFailure: 'DURAFLOW_ACTIVITY_FAILURE',
  WorkflowFailed: 'DURAFLOW_WORKFLOW_FAILED',
  NonDeterminism: 'DURAFLOW_NON_DETERMINISM',
  WorkflowNotFound: 'DURAFLOW_WORKFLOW_NOT_FOUND',
  WorkflowAlreadyExists: 'DURAFLOW_WORKFLOW_ALREADY_EXISTS',
  WorkflowClosed: 'DURAFLOW_WORKFLOW_CLOSED',
  UnknownWorkflow: 'DURAFLOW_UNKNOWN_WORKFLOW',
  Timeout: 'DURAFLOW_TIMEOUT',
  InvalidArgument: 'DURAFLOW_INVALID_ARGUMENT',
  PayloadTooLarge: 'DURAFLOW_PAYLOAD_TOO_LARGE',
  Configuration: 'DURAFLOW_CONFIGURATION',
  DatabaseUnavailable: 'DURAFLOW_DATABASE_UNAVAILABLE',
  EngineClosed: 'DURAFLOW_ENGINE_CLOSED',
  NameTakenOver: 'DURAFLOW_NAME_TAKEN_OVER',
  UnreadableHistory: 'DURAFLOW_UNREADABLE_HISTORY',
  UnreadableState: 'DURAFLOW_UNREADABLE_STATE',
  EventIdReused: 'DURAFLOW_EVENT_ID_REUSED',
  /** The `code` of an activity failure named UnknownActivityError (no class: it is only a cause). */
  UnknownActivity: 'DURAFLOW_UNKNOWN_ACTIVITY',
  /** The `code` of an activity failure named ActivityThreadError: its thread died under it. */
  ActivityThread: 'DURAFLOW_ACTIVITY_THREAD',
} as const;

/** Base class of duraflow's errors. */
export class EngineError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
EngineError.prototype.name = 'EngineError';

/**
 * Thrown by an activity to fail at once, without retries; the workflow receives an
 * `ActivityFailure` whose cause is this error.
 */
export class NonRetryableError extends EngineError {
  /** Marks the error for the retry logic, also after a thread hop. */
  readonly nonRetryable = true;
  /** Extra JSON kept with the failure. */
  readonly details: unknown;

  constructor(message: string, options?: { cause?: unknown; details?: unknown }) {
    super(ErrorCode.NonRetryable, message, options);
    this.details = options?.details;
  }
}
NonRetryableError.prototype.name = 'NonRetryableError';

/**
 * Thrown inside a workflow when an activity failed for good: not retryable, or out of attempts.
 * `cause` is the last attempt's error (its name, message and stack).
 */
export class ActivityFailure extends EngineError {
  readonly activityName: string;
  /** Attempts made, the failed last one included. */
  readonly attempts: number;

  constructor(activityName: string, attempts: number, cause: Error) {
    super(
      ErrorCode.ActivityFailure,
      `activity "${activityName}" failed after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${cause.message}`,
      { cause },
    );
    this.activityName = activityName;
    this.attempts = attempts;
  }

  /**
   * The activity and its attempts, as data: what a stored failure keeps as `details`, so the
   * error that `result()` and `inspect` rebuild from it still says them.
   */
  get details(): { activityName: string; attempts: number } {
    return { activityName: this.activityName, attempts: this.attempts };
  }
}
ActivityFailure.prototype.name = 'ActivityFailure';

/** Thrown by `result()` when the workflow's code threw; `cause` is that error. */
export class WorkflowFailedError extends EngineError {
  readonly workflowId: string;

  constructor(workflowId: string, cause: Error) {
    super(ErrorCode.WorkflowFailed, `workflow "${workflowId}" failed: ${cause.message}`, { cause });
    this.workflowId = workflowId;
  }
}
WorkflowFailedError.prototype.name = 'WorkflowFailedError';

/**
 * The workflow's code no longer issues the commands its history recorded (it was changed under a
 * running execution). The workflow is parked, shown with this error by `inspect`, until code that
 * matches its history is deployed.
 */
export class NonDeterminismError extends EngineError {
  readonly workflowId: string;
  /** The recorded step at which replay diverged. */
  readonly activation: number;
  readonly commandId: number | null;
  readonly expected: string;
  readonly got: string;

  constructor(workflowId: string, activation: number, commandId: number | null, expected: string, got: string) {
    super(
      ErrorCode.NonDeterminism,
      `workflow "${workflowId}" diverged from its history at activation ${activation}` +
        `${commandId === null ? '' : `, command #${commandId}`}: expected ${expected}, got ${got}`,
    );
    this.workflowId = workflowId;
    this.activation = activation;
    this.commandId = commandId;
    this.expected = expected;
    this.got = got;
  }

  /** Where replay diverged, as data: what a stored failure keeps as `details`. */
  get details(): { activation: number; commandId: number | null; expected: string; got: string } {
    return { activation: this.activation, commandId: this.commandId, expected: this.expected, got: this.got };
  }
}
NonDeterminismError.prototype.name = 'NonDeterminismError';

/** No workflow has this id. */
export class WorkflowNotFoundError extends EngineError {
  readonly workflowId: string;

  constructor(workflowId: string) {
    super(ErrorCode.WorkflowNotFound, `no workflow with id ${JSON.stringify(workflowId)}`);
    this.workflowId = workflowId;
  }
}
WorkflowNotFoundError.prototype.name = 'WorkflowNotFoundError';

/** `startWorkflow` was given an id that is taken; the existing workflow is untouched. */
export class WorkflowAlreadyExistsError extends EngineError {
  readonly workflowId: string;

  constructor(workflowId: string) {
    super(ErrorCode.WorkflowAlreadyExists, `a workflow with id ${JSON.stringify(workflowId)} already exists`);
    this.workflowId = workflowId;
  }
}
WorkflowAlreadyExistsError.prototype.name = 'WorkflowAlreadyExistsError';

/** `sendEvent` to a workflow that has already completed or failed. */
export class WorkflowClosedError extends EngineError {
  readonly workflowId: string;
  readonly status: 'completed' | 'failed';

  constructor(workflowId: string, status: 'completed' | 'failed') {
    super(ErrorCode.WorkflowClosed, `workflow ${JSON.stringify(workflowId)} has already ${status}`);
    this.workflowId = workflowId;
    this.status = status;
  }
}
WorkflowClosedError.prototype.name = 'WorkflowClosedError';

/** The engine has no workflow registered under this name. */
export class UnknownWorkflowError extends EngineError {
  readonly workflowName: string;

  constructor(workflowName: string) {
    super(ErrorCode.UnknownWorkflow, `no workflow is registered as ${JSON.stringify(workflowName)}`);
    this.workflowName = workflowName;
  }
}
UnknownWorkflowError.prototype.name = 'UnknownWorkflowError';

/**
 * A wait ran out of time: `waitForEvent` with `timeoutMs`, `result()` with `timeoutMs`, or an
 * activity attempt past its `startToCloseTimeoutMs`.
 */
export class TimeoutError extends EngineError {
  constructor(message: string) {
    super(ErrorCode.Timeout, message);
  }
}
TimeoutError.prototype.name = 'TimeoutError';

/** An argument was rejected before anything was stored; the message names it. */
export class InvalidArgumentError extends EngineError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.InvalidArgument, message, options);
  }
}
InvalidArgumentError.prototype.name = 'InvalidArgumentError';

/** A payload (input, result, event, variable) encodes to more bytes than `maxPayloadBytes`. */
export class PayloadTooLargeError extends EngineError {
  readonly bytes: number;
  readonly limit: number;

  constructor(what: string, bytes: number, limit: number) {
    super(ErrorCode.PayloadTooLarge, `${what} is ${bytes} bytes as JSON, over the limit of ${limit}`);
    this.bytes = bytes;
    this.limit = limit;
  }
}
PayloadTooLargeError.prototype.name = 'PayloadTooLargeError';

/** The engine's setup is unusable, e.g. an activities module that is missing or exports nothing. */
export class ConfigurationError extends EngineError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(ErrorCode.Configuration, message, options);
  }
}
ConfigurationError.prototype.name = 'ConfigurationError';

/**
 * The database could not be reached: by a call, for `databaseRetryMs` (connections refused, cut
 * or hanging); by `createEngine` or `createClient`, at once. Also thrown by `createEngine` or
 * `createClient` whose migrations (or, with `migrate: false`, whose read of the applied ones)
 * waited `databaseRetryMs` for a lock another session holds (the message names it).
 * Safe to retry: a start or an event that may have been stored is recognised as the same one when
 * retried with the same `workflowId` or `eventId`.
 */
export class DatabaseUnavailableError extends EngineError {
  /** `reason`: what went wrong, when the cause's own message would not say it. */
  constructor(what: string, cause: unknown, reason?: string) {
    super(ErrorCode.DatabaseUnavailable, `${what}: ${reason ?? `the database is unavailable (${coerceError(cause).message})`}`, {
      cause,
    });
  }
}
DatabaseUnavailableError.prototype.name = 'DatabaseUnavailableError';

/** The engine or client was closed before the call could finish. */
export class EngineClosedError extends EngineError {
  /** `cause`: for a call the closing engine could not finish, what stopped it (the database's error). */
  constructor(options?: { cause?: unknown }) {
    super(ErrorCode.EngineClosed, 'the engine is closed', options);
  }
}
EngineClosedError.prototype.name = 'EngineClosedError';

/**
 * `sendEvent` with an `eventId` the workflow already has for an event of another name or payload:
 * a retried send repeats both, so this is two events under one id. The first is kept as it was;
 * the second is not stored.
 */
export class EventIdReusedError extends EngineError {
  readonly workflowId: string;
  readonly eventId: string;

  constructor(workflowId: string, eventId: string) {
    super(
      ErrorCode.EventIdReused,
      `workflow ${JSON.stringify(workflowId)} already has event id ${JSON.stringify(eventId)} for an event of another name or payload; the first is kept`,
    );
    this.workflowId = workflowId;
    this.eventId = eventId;
  }
}
EventIdReusedError.prototype.name = 'EventIdReusedError';

/**
 * Why an activity's `signal` aborts when another engine takes over its workflow's name: this
 * engine records nothing more for the workflow, and the new holder runs the activity again.
 */
export class NameTakenOverError extends EngineError {
  readonly workflowName: string;

  constructor(workflowName: string) {
    super(
      ErrorCode.NameTakenOver,
      `another engine took over workflow name ${JSON.stringify(workflowName)}: this attempt's outcome will not be recorded, and that engine runs the activity again`,
    );
    this.workflowName = workflowName;
  }
}
NameTakenOverError.prototype.name = 'NameTakenOverError';

/**
 * A row of a workflow's stored history is not what duraflow wrote: its type is not one duraflow
 * writes, it lacks the command id its type has, or its payload is not a JSON object, or lacks a
 * field replay reads or holds it in another form (an EventWaitStarted payload without its event's
 * name, say), as a row written or changed by hand may. Such a row is never
 * taken for changed code, so the workflow is not parked. `inspect` throws it; an engine that
 * replays the workflow fails the workflow's actor with it, and tries again after a growing pause.
 * Nothing stored is changed: once the row is repaired, the workflow goes on.
 */
export class UnreadableHistoryError extends EngineError {
  readonly workflowId: string;
  /** The row's `seq`: its position in the workflow's history (1, 2, 3, …). */
  readonly seq: number;
  /** The row's event type. */
  readonly eventType: string;

  constructor(workflowId: string, seq: number, eventType: string, cause: unknown) {
    super(
      ErrorCode.UnreadableHistory,
      `workflow ${JSON.stringify(workflowId)} has a history row that cannot be read: seq ${seq} (${eventType}): ${coerceError(cause).message}`,
      { cause },
    );
    this.workflowId = workflowId;
    this.seq = seq;
    this.eventType = eventType;
  }
}
UnreadableHistoryError.prototype.name = 'UnreadableHistoryError';

/**
 * A stored value of a workflow besides its history, named as the field of `inspect`'s answer that
 * shows it (`result()` reads `result` and `error` too).
 */
export type StoredField =
  | 'input'
  | 'result'
  | 'error'
  | 'vars'
  | 'waitingOn.activities.lastFailure'
  | 'queuedEvents.payload';

/**
 * A stored value of a workflow besides its history (see `StoredField`) is not what duraflow
 * wrote: not JSON, or, for `vars`, `error` and `lastFailure`, not a JSON object (the row was
 * changed by hand, say). `inspect` throws it, and `result()` for the `result` or `error` of an
 * ended workflow; `cause` is the JSON error. An engine that starts or replays a workflow whose
 * `input` is so, or hands it an event whose payload is so, fails the workflow's actor with it
 * (neither failing nor parking the workflow),
 * and tries again after a growing pause. Nothing stored is changed: once the value is repaired,
 * the call succeeds and the workflow runs.
 */
export class UnreadableStateError extends EngineError {
  readonly workflowId: string;
  readonly field: StoredField;

  /** `of` says which activity or event the value belongs to, for the message. */
  constructor(workflowId: string, field: StoredField, cause: unknown, of?: string) {
    super(
      ErrorCode.UnreadableState,
      `workflow ${JSON.stringify(workflowId)} has a stored ${field}${of === undefined ? '' : ` (${of})`} that cannot be read: ${coerceError(cause).message}`,
      { cause },
    );
    this.workflowId = workflowId;
    this.field = field;
  }
}
UnreadableStateError.prototype.name = 'UnreadableStateError';

/** The failure of an attempt of an activity that no module or inline function provides: final. */
export function unknownActivityFailure(name: string): SerializedFailure {
  return {
    name: 'UnknownActivityError',
    message: `no activity is registered as ${JSON.stringify(name)}`,
    code: ErrorCode.UnknownActivity,
    nonRetryable: true,
  };
}
