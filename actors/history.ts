/**
 * History events: what a workflow's log records, as pure data. Rows store `type`, `command_id`
 * and a JSON `payload` holding the rest; user values inside the payload are JSON written once by
 * the codec and spliced in, never encoded twice.
 */

import { readHistoryPayload } from '../storage/stored-json.js';
import type { StoredHistoryRow, WorkflowWrite } from '../storage/rows.js';
import type { ActivityOptions } from './commands.js';
import type { ActorMessage } from './messages.js';

/** Every history event type. */
export const EventType = {
  /** The workflow's code began; first event of activation 1. */
  WorkflowStarted: 'WorkflowStarted',
  /** The workflow called an activity (command). */
  ActivityScheduled: 'ActivityScheduled',
  /** The activity returned; carries its result and the attempt that succeeded. */
  ActivityCompleted: 'ActivityCompleted',
  /** The activity failed for good (non-retryable, or out of attempts). */
  ActivityFailed: 'ActivityFailed',
  /** The workflow started a durable timer (command). */
  TimerStarted: 'TimerStarted',
  /** A timer's due time passed. */
  TimerFired: 'TimerFired',
  /** The workflow began waiting for a named event, possibly with a timeout (command). */
  EventWaitStarted: 'EventWaitStarted',
  /** An external event was delivered to the workflow. */
  EventReceived: 'EventReceived',
  /** The workflow returned; carries its result (command). */
  WorkflowCompleted: 'WorkflowCompleted',
  /** The workflow threw; carries the error (command). */
  WorkflowFailed: 'WorkflowFailed',
} as const;

/** Name of a history event type. */
export type EventTypeName = (typeof EventType)[keyof typeof EventType];

/**
 * An error as plain JSON: the only form in which errors cross threads or reach the database.
 */
export interface SerializedFailure {
  /** The error's `name` (its class, for errors thrown by user code). */
  name: string;
  message: string;
  stack?: string;
  /** The error's `code` property, when it had a string one. */
  code?: string;
  /** True when the thrower said retrying cannot help. */
  nonRetryable?: boolean;
  /** Extra JSON the error carried (`details`). */
  details?: unknown;
  cause?: SerializedFailure;
}

interface EventBase {
  /** Position in the workflow's history: 1, 2, 3, … */
  seq: number;
  /** The step that wrote it; all events of one step share the number. */
  activation: number;
  /** When that step ran (also `ctx.now()` during it). */
  at: Date;
}

/** One entry of a workflow's history, as `inspect` returns it. */
export type HistoryEvent = EventBase &
  (
    | { type: 'WorkflowStarted'; workflowName: string; version: string; input?: unknown }
    | {
        type: 'ActivityScheduled';
        commandId: number;
        activityName: string;
        input?: unknown;
        /**
         * The call's `ctx.activities` options, as checked and stored (an unlimited `maxAttempts`
         * as the largest safe integer).
         */
        options: ActivityOptions;
      }
    | { type: 'ActivityCompleted'; commandId: number; activityName: string; attempts: number; result?: unknown }
    | {
        type: 'ActivityFailed';
        commandId: number;
        activityName: string;
        attempts: number;
        failure: SerializedFailure;
      }
    | { type: 'TimerStarted'; commandId: number; dueAt: Date }
    | { type: 'TimerFired'; commandId: number }
    | { type: 'EventWaitStarted'; commandId: number; eventName: string; timeoutAt?: Date }
    | {
        type: 'EventReceived';
        eventName: string;
        inboxId: number;
        /** The `EventWaitStarted` command this event resolved, if a wait took it. */
        resolves?: number;
        payload?: unknown;
      }
    | { type: 'WorkflowCompleted'; result?: unknown }
    | { type: 'WorkflowFailed'; failure: SerializedFailure }
  );

/**
 * Builds a JSON object from already-encoded values: each value is JSON text or undefined (the key
 * is then left out). Keys are fixed identifiers, so they need no escaping.
 */
export function jsonObject(fields: Record<string, string | undefined>): string {
  let out = '';
  for (const key in fields) {
    const value = fields[key];
    if (value === undefined) continue;
    out += `${out ? ',' : '{'}"${key}":${value}`;
  }
  return out ? `${out}}` : '{}';
}

/** JSON of a string (for the fixed-key payloads). */
export const str = (s: string): string => JSON.stringify(s);

const quotedNames = new Map<string, string>();

/**
 * JSON of an activity name, remembered: every step writes its activity's name twice, and a
 * program has few of them. Past a bound the names are quoted afresh each time.
 */
export function quotedName(name: string): string {
  let quoted = quotedNames.get(name);
  if (quoted === undefined) {
    quoted = JSON.stringify(name);
    if (quotedNames.size < 10_000) quotedNames.set(name, quoted);
  }
  return quoted;
}

/** Payload of ActivityScheduled (the hot path builds it without an intermediate object). */
export function scheduledPayload(activityName: string, input: string | undefined, options: string): string {
  return `{"activityName":${quotedName(activityName)}${input === undefined ? '' : `,"input":${input}`},"options":${options}}`;
}

/**
 * The activity outcomes `write` stores (its ActivityCompleted and ActivityFailed rows, and the
 * retries in its task rows), as the messages that brought them, added to `into`: what a step
 * whose flush failed took, read back from its write rather than kept beside it for every step.
 */
export function outcomesIn(write: WorkflowWrite, into: ActorMessage[]): void {
  for (const row of write.history) {
    if (row.commandId === null) continue;
    if (row.type === EventType.ActivityCompleted) {
      const { attempts, result } = readHistoryPayload(row.type, row.payload);
      into.push({ type: 'activityCompleted', commandId: row.commandId, attempts: attempts as number, result: result === undefined ? undefined : JSON.stringify(result) });
    } else if (row.type === EventType.ActivityFailed) {
      const { attempts, failure } = readHistoryPayload(row.type, row.payload);
      into.push({ type: 'activityFailed', commandId: row.commandId, attempts: attempts as number, failure: failure as SerializedFailure });
    }
  }
  for (const task of write.tasksUpsert) into.push({ type: 'activityRetry', commandId: task.commandId, task });
}

/** Payload of ActivityCompleted. */
export function completedPayload(activityName: string, attempts: number, result: string | undefined): string {
  return `{"activityName":${quotedName(activityName)},"attempts":${attempts}${result === undefined ? '' : `,"result":${result}`}}`;
}

/**
 * Whether the rows of each type duraflow writes carry a command id (the command's, or the one
 * they answer). Replay matches rows to the code's commands by it: a row of another type, or one
 * without the id its type has, would be taken for changed code (a `failWorkflow` expected, an
 * answer to command #0) and park the workflow, where it is a row to repair.
 */
const HAS_COMMAND_ID: ReadonlyMap<string, boolean> = new Map([
  [EventType.WorkflowStarted, false],
  [EventType.ActivityScheduled, true],
  [EventType.ActivityCompleted, true],
  [EventType.ActivityFailed, true],
  [EventType.TimerStarted, true],
  [EventType.TimerFired, true],
  [EventType.EventWaitStarted, true],
  [EventType.EventReceived, false],
  [EventType.WorkflowCompleted, false],
  [EventType.WorkflowFailed, false],
]);

/** Why `row` is not one duraflow writes, judged by its type and command id (not its payload). */
function rowProblem(row: StoredHistoryRow): string | undefined {
  const hasCommandId = HAS_COMMAND_ID.get(row.type);
  if (hasCommandId === undefined) return `${JSON.stringify(row.type)} is not a type of history event`;
  if (hasCommandId && row.command_id === null) return `a ${row.type} row must have a command id; it has none`;
  return undefined;
}

/**
 * The payload of a stored row of `workflowId`, as an object. A row duraflow did not write (of a
 * type it does not write, without the command id its type has, or with a payload that
 * `readHistoryPayload` refuses: a row written by hand, say) throws `errors.unreadableHistory`
 * naming the row, instead of JSON.parse's error. Passing the factory, not a closure over the row,
 * keeps replay from allocating one per row.
 */
export function payloadOf(
  row: StoredHistoryRow,
  workflowId: string,
  errors: { unreadableHistory(workflowId: string, seq: number, eventType: string, cause: Error): Error },
): Record<string, unknown> {
  try {
    const problem = rowProblem(row);
    if (problem !== undefined) throw new TypeError(problem);
    return readHistoryPayload(row.type, row.payload);
  } catch (error) {
    throw errors.unreadableHistory(workflowId, row.seq, row.type, error as Error);
  }
}

/** Builds the public form of a stored row from the row and its payload (see `payloadOf`). */
export function toHistoryEvent(row: StoredHistoryRow, p: Record<string, unknown>): HistoryEvent {
  const base = { seq: row.seq, activation: row.activation, at: row.at };
  const commandId = row.command_id ?? 0;
  switch (row.type) {
    case EventType.TimerStarted:
      return { ...base, type: row.type, commandId, dueAt: new Date(p.dueAt as number) };
    case EventType.EventWaitStarted:
      return {
        ...base,
        type: row.type,
        commandId,
        eventName: p.eventName as string,
        ...(p.timeoutAt === undefined ? {} : { timeoutAt: new Date(p.timeoutAt as number) }),
      };
    default:
      return { ...base, type: row.type, ...(row.command_id === null ? {} : { commandId }), ...p } as HistoryEvent;
  }
}
