import type { ActorSnapshot } from '../actors/workflow-actor.js';
import { type HistoryEvent, payloadOf, type SerializedFailure, toHistoryEvent } from '../actors/history.js';
import type { StoredHistoryRow, TaskRow, TimerRow, WorkflowRow } from '../storage/rows.js';
import { readStored, readStoredObject } from './read-stored.js';
import { workflowErrors } from './workflow-errors.js';

type RetryState = Pick<TaskRow, 'commandId' | 'attempt' | 'visibleAt' | 'lastFailure'>;

export type { HistoryEvent };

/** An activity the workflow awaits. */
export interface WaitingActivity {
  commandId: number;
  activityName: string;
  /** The attempt running or due next. */
  attempt?: number;
  /** When that attempt may start. */
  nextAttemptAt?: Date;
  /** The previous attempt's error. */
  lastFailure?: SerializedFailure;
}

/** What a running workflow is blocked on. */
export interface WaitingOn {
  activities: WaitingActivity[];
  /** Durable timers: sleeps and event-wait timeouts, next due first. */
  timers: { commandId: number; dueAt: Date }[];
  events: { commandId: number; eventName: string; timeoutAt?: Date }[];
}

/** Everything known about one workflow, as `inspect` returns it. */
export interface WorkflowState {
  workflowId: string;
  workflowName: string;
  version: string;
  /**
   * `pending`: not started yet (a future `startAt`, or no running engine registers its name);
   * `running`; `completed`; `failed` (its code threw).
   */
  status: 'pending' | 'running' | 'completed' | 'failed';
  input: unknown;
  result?: unknown;
  /**
   * The error a failed workflow threw; on a running workflow, the `NonDeterminismError` that
   * parked it.
   */
  error?: SerializedFailure;
  /** Variables set with `ctx.setVar`: live values when the workflow is in this engine's memory. */
  vars: Record<string, unknown>;
  createdAt: Date;
  /** When a pending workflow is due to start. */
  startAt: Date;
  startedAt?: Date;
  completedAt?: Date;
  /** Why a pending workflow has not started. */
  pendingReason?: string;
  history: HistoryEvent[];
  waitingOn: WaitingOn;
  /**
   * Events stored for the workflow and not handed to it yet (sent before it started, while it was
   * parked, or not delivered yet). One handed over is in `history` (`EventReceived`), including
   * one that nothing waited for, which the workflow keeps for its next `waitForEvent`.
   */
  queuedEvents: { eventName: string; payload?: unknown }[];
}

/** Rows read for one `inspect`. */
export interface StoredState {
  row: WorkflowRow;
  history: StoredHistoryRow[];
  /** Retry state of activities whose first attempt failed. */
  tasks: RetryState[];
  timers: TimerRow[];
  inbox: { name: string; payload: string | undefined }[];
}

/** What a workflow awaits, derived from its committed history. */
function waitingFromHistory(history: HistoryEvent[], timers: TimerRow[]): WaitingOn {
  const activities = new Map<number, WaitingActivity>();
  const events = new Map<number, { commandId: number; eventName: string; timeoutAt?: Date }>();
  // A wait can take its event in the step that starts it, which records the event first.
  const resolved = new Set<number>();
  for (const event of history) if (event.type === 'EventReceived' && event.resolves !== undefined) resolved.add(event.resolves);
  for (const event of history) {
    switch (event.type) {
      case 'ActivityScheduled':
        activities.set(event.commandId, { commandId: event.commandId, activityName: event.activityName });
        break;
      case 'ActivityCompleted':
      case 'ActivityFailed':
        activities.delete(event.commandId);
        break;
      case 'EventWaitStarted':
        if (resolved.has(event.commandId)) break;
        events.set(event.commandId, {
          commandId: event.commandId,
          eventName: event.eventName,
          ...(event.timeoutAt ? { timeoutAt: event.timeoutAt } : {}),
        });
        break;
      case 'TimerFired':
        events.delete(event.commandId);
        break;
      case 'WorkflowCompleted':
      case 'WorkflowFailed':
        return { activities: [], timers: [], events: [] };
    }
  }
  return {
    activities: [...activities.values()],
    timers: timers.map((t) => ({ commandId: t.commandId, dueAt: new Date(t.dueAt) })),
    events: [...events.values()],
  };
}

/**
 * Builds the public state from stored rows and, when the workflow is hot, its live actor.
 * `isRegisteredHere` is set when the engine asking runs the workflow's name now (registers it and
 * holds its lease).
 */
export function buildWorkflowState(stored: StoredState, live: ActorSnapshot | undefined, now: number, isRegisteredHere = false): WorkflowState {
  const { row } = stored;
  const history = stored.history.map((r) => toHistoryEvent(r, payloadOf(r, row.id, workflowErrors)));
  let waitingOn: WaitingOn;
  if (live) {
    const o = live.outstanding;
    waitingOn = {
      activities: o.activities.map((a) => ({ commandId: a.commandId, activityName: a.name })),
      timers: o.timers.map((t) => ({ commandId: t.commandId, dueAt: new Date(t.dueAt) })),
      events: o.events.map((e) => ({
        commandId: e.commandId,
        eventName: e.name,
        ...(e.timeoutAt === undefined ? {} : { timeoutAt: new Date(e.timeoutAt) }),
      })),
    };
  } else {
    waitingOn = waitingFromHistory(history, stored.timers);
  }
  // The actor lists its timers in the order they were started, the database by due time: one
  // order for both, so an engine and a client show the same.
  waitingOn.timers.sort((a, b) => a.dueAt.getTime() - b.dueAt.getTime() || a.commandId - b.commandId);
  // By command id: a wide fan-out waiting on its retries has as many tasks as activities.
  const tasks = new Map(stored.tasks.map((t) => [t.commandId, t]));
  for (const activity of waitingOn.activities) {
    const task = tasks.get(activity.commandId);
    activity.attempt = task?.attempt ?? 1;
    if (!task) continue;
    activity.nextAttemptAt = new Date(task.visibleAt);
    if (!task.lastFailure) continue;
    const of = `activity #${activity.commandId}`;
    activity.lastFailure = readStoredObject<SerializedFailure>(task.lastFailure, row.id, 'waitingOn.activities.lastFailure', of);
  }
  const state: WorkflowState = {
    workflowId: row.id,
    workflowName: row.name,
    version: row.version,
    status: row.status,
    input: readStored(row.input, row.id, 'input'),
    vars: live ? live.vars : readStoredObject<Record<string, unknown>>(row.vars, row.id, 'vars'),
    createdAt: row.created_at,
    startAt: row.start_at,
    history,
    waitingOn,
    queuedEvents: stored.inbox.map((e) =>
      e.payload === undefined
        ? { eventName: e.name }
        : { eventName: e.name, payload: readStored(e.payload, row.id, 'queuedEvents.payload', `event ${JSON.stringify(e.name)}`) },
    ),
  };
  if (row.status === 'completed') state.result = readStored(row.result, row.id, 'result');
  if (row.error !== null) state.error = readStoredObject<SerializedFailure>(row.error, row.id, 'error');
  if (row.started_at) state.startedAt = row.started_at;
  if (row.completed_at) state.completedAt = row.completed_at;
  if (row.status === 'pending') {
    state.pendingReason =
      row.start_at.getTime() > now
        ? `scheduled to start at ${row.start_at.toISOString()}`
        : isRegisteredHere
          ? 'due; waiting for room in the actor cache (maxCachedWorkflows is reached), or for the next poll'
          : `waiting for an engine that registers workflow ${JSON.stringify(row.name)} and holds its lease (that of one that crashed expires after its leaseTtlMs), or for room in its actor cache`;
  }
  return state;
}
