import { appended, NO_ITEMS, removedAt, replacedAt } from './lists.js';

/**
 * The latest time, in epoch milliseconds, anything may be scheduled for: the end of JavaScript's
 * Date range, which Postgres's timestamptz also holds. Callers' times beyond it are refused
 * before they reach a flush, where they would fail the whole batch.
 */
export const LATEST_TIME_MS = 8.64e15;

/**
 * Row shapes the WAL writes and the loaders read. Payload columns hold JSON text produced above
 * storage; times travel as epoch milliseconds and become timestamptz in SQL.
 */

/** One history row. */
export interface HistoryRow {
  seq: number;
  activation: number;
  type: string;
  commandId: number | null;
  payload: string | null;
  at: number;
}

/** A pending durable timer (a sleep, or an event wait's timeout). */
export interface TimerRow {
  workflowId: string;
  commandId: number;
  dueAt: number;
}

/**
 * An activity scheduled and not yet finished. Stored as a row only once an attempt has failed
 * (the retry state); a first attempt is known from its ActivityScheduled event.
 */
export interface TaskRow {
  workflowId: string;
  commandId: number;
  name: string;
  input: string | undefined;
  /** JSON of the activity options the workflow passed (retry policy, timeout). */
  options: string;
  attempt: number;
  visibleAt: number;
  scheduledAt: number;
  lastFailure: string | null;
}

/** A workflow row created by a start. */
export interface NewWorkflowRow {
  id: string;
  /** Random per start call: a retried insert recognises its own row by it. */
  startToken: string;
  name: string;
  version: string;
  input: string | undefined;
  startAt: number;
  createdAt: number;
}

/** Everything one step of one workflow writes, committed atomically with other workflows'. */
export interface WorkflowWrite {
  workflowId: string;
  /** The workflow's name: the flush checks this engine still holds its lease. */
  workflowName: string;
  /** The epoch of that lease when the write was appended (set by the WAL; merged writes keep the first). */
  leaseEpoch?: string;
  /** Rows continuing the workflow's history; their seqs are contiguous with what is stored. */
  history: HistoryRow[];
  status?: 'running' | 'completed' | 'failed';
  vars?: string;
  result?: string | null;
  /** A failure or parking error as JSON; null clears a previous one. */
  error?: string | null;
  startedAt?: number;
  completedAt?: number;
  timersInsert: readonly TimerRow[];
  timersDelete: readonly number[];
  /** Retry state of activities past their first attempt (first attempts live in history). */
  tasksUpsert: readonly TaskRow[];
  tasksDelete: readonly number[];
  inboxDelete: readonly number[];
  /** Whether this write ends the workflow (the flush then notifies waiting clients). */
  isTerminal: boolean;
  /**
   * Set on a workflow's first step when the engine that starts it runs that step before the
   * workflow's row exists: the flush inserts the row (with this write's status, vars and times)
   * and the step's rows only if the id was free, in one commit instead of two.
   */
  creates?: NewWorkflowRow;
}

/** A write with nothing in it yet. */
export function emptyWrite(workflowId: string, workflowName: string): WorkflowWrite {
  return {
    workflowId,
    workflowName,
    history: [],
    // Most steps touch none of these: they share one empty list until their first item.
    timersInsert: NO_ITEMS,
    timersDelete: NO_ITEMS,
    tasksUpsert: NO_ITEMS,
    tasksDelete: NO_ITEMS,
    inboxDelete: NO_ITEMS,
    isTerminal: false,
  };
}

/** Whether a write changes its workflow's row (and so takes part in the UPDATE). */
export function changesRow(w: WorkflowWrite): boolean {
  return (
    w.status !== undefined ||
    w.vars !== undefined ||
    w.result !== undefined ||
    w.error !== undefined ||
    w.startedAt !== undefined ||
    w.completedAt !== undefined
  );
}

/**
 * Records that the timer is gone. A timer inserted by this same write is dropped instead: the
 * flush is one statement whose parts cannot see each other's rows, so its delete would miss it.
 */
export function deleteTimer(write: WorkflowWrite, commandId: number): void {
  const i = write.timersInsert.findIndex((t) => t.commandId === commandId);
  if (i >= 0) write.timersInsert = removedAt(write.timersInsert, i);
  else write.timersDelete = appended(write.timersDelete, commandId);
}

/**
 * Records a task's new state. One INSERT … ON CONFLICT may not touch a row twice (the flush would
 * fail as a whole), so a write keeps only the newest state of each task.
 */
export function upsertTask(write: WorkflowWrite, task: TaskRow): void {
  write.tasksUpsert = withTask(write.tasksUpsert, task);
}

/** `tasks` with `task` in place of the one for its command, or at the end: the later one wins. */
export function withTask(tasks: readonly TaskRow[], task: TaskRow): readonly TaskRow[] {
  const i = tasks.findIndex((t) => t.commandId === task.commandId);
  return i >= 0 ? replacedAt(tasks, i, task) : appended(tasks, task);
}

/**
 * Records that the task is gone, dropping an upsert of it in this same write. The delete stays
 * either way: the upsert may be an update of a row an earlier flush stored.
 */
export function deleteTask(write: WorkflowWrite, commandId: number): void {
  const i = write.tasksUpsert.findIndex((t) => t.commandId === commandId);
  if (i >= 0) write.tasksUpsert = removedAt(write.tasksUpsert, i);
  write.tasksDelete = appended(write.tasksDelete, commandId);
}

/** A `workflows` row as stored. */
export interface WorkflowRow {
  id: string;
  name: string;
  version: string;
  status: 'pending' | 'running' | 'completed' | 'failed';
  input: string | null;
  result: string | null;
  error: string | null;
  vars: string;
  start_at: Date;
  created_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
}

/** A `history` row as stored. */
export interface StoredHistoryRow {
  seq: number;
  activation: number;
  type: string;
  command_id: number | null;
  payload: string | null;
  at: Date;
}

/** The stored row of a start not begun yet, as a start made in this process seeds its actor with. */
export function pendingRowOf(row: NewWorkflowRow): WorkflowRow {
  return {
    id: row.id,
    name: row.name,
    version: row.version,
    status: 'pending',
    input: row.input ?? null,
    result: null,
    error: null,
    vars: '{}',
    start_at: new Date(row.startAt),
    created_at: new Date(row.createdAt),
    started_at: null,
    completed_at: null,
  };
}
