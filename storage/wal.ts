import { randomUUID } from 'node:crypto';

import { pause, retryDelayMs } from './backoff.js';
import { appended } from './lists.js';
import { isRetryable } from './pg-errors.js';
import { deleteTask, deleteTimer, type NewWorkflowRow, upsertTask, type WorkflowWrite } from './rows.js';
import { committedFlush, deleteExpired, flushBatch } from './sql/flush-batch.js';
import { type FenceParams, heldEpochs, LeaseLostError } from './sql/leases.js';
import type { Sql, Tables } from './sql.js';

/** What the WAL reports to whoever watches it (metrics, logs). */
export interface WalObserver {
  flushed(stats: { events: number; writes: number; starts: number; seconds: number }): void;
  flushFailed(error: unknown, willRetry: boolean): void;
  /** A durable callback threw (a bug in its owner; the batch is committed regardless). */
  callbackFailed(error: unknown): void;
  /** Deleting expired flush tokens and consumed events failed; it is tried again later. */
  cleanupFailed(error: unknown): void;
}

/** Options of the write-ahead batch. */
export interface WalOptions {
  sql: Sql;
  tables: Tables;
  /**
   * Called when a flush failed for good (not retryable, or the WAL was closed): the writes of
   * these workflows, in the failed batch and in the one filling behind it, are discarded and
   * their durable callbacks will never run. Their owners must be dropped and rebuilt; `discarded`
   * holds those writes, oldest first by workflow: what the database lacks of each.
   */
  onFlushFailed: (workflowIds: ReadonlySet<string>, error: unknown, discarded: ReadonlyMap<string, readonly WorkflowWrite[]>) => void;
  /** Pending events above which `isCongested` turns true. */
  highWaterEvents: number;
  /**
   * Flushes committed at once, on separate connections, over disjoint sets of workflows: a
   * workflow's later writes wait until its earlier ones committed, so each history stays in order.
   * @default 2
   */
  maxFlushesInFlight?: number;
  /**
   * Most characters one flush carries (payloads, and about a hundred per row); more pending goes
   * in further flushes. The limit is for the flush's documents (history, starts, row updates),
   * each of which Postgres reads as one jsonb value that must stay under 256 MB (escaping can
   * double a payload in one). @default 32 Mi
   */
  maxFlushChars?: number;
  /** Row documents longer than this go to Postgres as json rather than jsonb. @default 64 Mi */
  maxJsonbChars?: number;
  observer?: WalObserver;
  /**
   * The engine's leases: each write is stamped with the epoch of its workflow name's lease when
   * it is appended (`epochOf`; undefined for a name not held), and its flush commits only if
   * `owner` still holds that epoch (else LeaseLostError). @default no check
   */
  lease?: { owner: string; epochOf: (workflowName: string) => string | undefined };
}

/** How often flushes also delete commit tokens older than an hour. */
const CLEANUP_INTERVAL_MS = 60_000;

/** Retries of a transient flush failure once `close()` has been called. */
const CLOSING_RETRIES = 3;

/**
 * How long after its first try a flush whose answer was lost may still be sent again: half the
 * hour its token is kept (see `deleteExpired`). A try sent before this finds the token of a try
 * that committed, even if it runs late or the database's clock is ahead; a later one might not,
 * and would take a committed flush for one that never was.
 */
const UNRESOLVED_LIMIT_MS = 30 * 60_000;

/**
 * A flush's answer was lost, and whether it committed was still unknown when its token could no
 * longer be relied on (the database away for `UNRESOLVED_LIMIT_MS`): it is not tried again. Its
 * workflows must be rebuilt from the database, which holds what did commit; a start in it finds
 * its own row by its token.
 */
export class FlushOutcomeUnknownError extends Error {
  readonly code = 'DURAFLOW_FLUSH_OUTCOME_UNKNOWN';
  constructor(options?: { cause?: unknown }) {
    super(`a flush lost its answer, and the database could not tell within ${UNRESOLVED_LIMIT_MS / 60_000} minutes whether it committed`, options);
    this.name = 'FlushOutcomeUnknownError';
  }
}

/** Thrown by `enqueue*` after `close()`. */
export class WalClosedError extends Error {
  readonly code = 'DURAFLOW_WAL_CLOSED';
  constructor() {
    super('the write-ahead batch is closed');
    this.name = 'WalClosedError';
  }
}

interface PendingStart {
  row: NewWorkflowRow;
  resolve: (inserted: boolean) => void;
  reject: (error: unknown) => void;
  /** Set once a flush it was in failed for another write: a second such failure rejects it. */
  hasWaitedOut?: boolean;
}

/** What a row's fixed fields (all but its payloads and ids) add to a flush, at most. */
const ROW_CHARS = 96;

/** Characters a write adds to its flush's statement (payloads are most of it). */
function writeChars(write: WorkflowWrite): number {
  let chars = (write.vars?.length ?? 0) + (write.result?.length ?? 0) + (write.error?.length ?? 0) + (write.creates?.input?.length ?? 0);
  for (const row of write.history) chars += ROW_CHARS + write.workflowId.length + (row.payload?.length ?? 0);
  return chars;
}

/** Characters a start adds to its flush's statement (its input is most of it). */
function startChars(row: NewWorkflowRow): number {
  return ROW_CHARS + row.id.length + row.name.length + (row.input?.length ?? 0);
}

/** Whether one of `batches` holds a write or a start of workflow `id`. */
function isHeld(batches: ReadonlySet<Batch>, id: string): boolean {
  for (const batch of batches) if (batch.holds(id)) return true;
  return false;
}

/** Writes gathered since the last flush; merged per workflow so each table gets one row each. */
class Batch {
  readonly writes = new Map<string, WorkflowWrite>();
  onDurable: { workflowId: string; callback: (isRefused: boolean) => void }[] = [];
  starts: PendingStart[] = [];
  events = 0;
  /** The ids of `starts`, made when the batch goes in flight (its starts do not change then), if it has any. */
  startIds: ReadonlySet<string> | undefined;

  /** Whether this batch holds a write or a start of workflow `id`. */
  holds(id: string): boolean {
    return this.writes.has(id) || (this.startIds?.has(id) ?? false);
  }

  /** Whether any of this batch's workflows has a write or a start in `batches`. */
  meets(batches: ReadonlySet<Batch>): boolean {
    if (batches.size === 0) return false;
    for (const id of this.writes.keys()) if (isHeld(batches, id)) return true;
    for (const { row } of this.starts) if (isHeld(batches, row.id)) return true;
    return false;
  }

  get isEmpty(): boolean {
    return this.writes.size === 0 && this.starts.length === 0;
  }

  add(write: WorkflowWrite, callback: ((isRefused: boolean) => void) | undefined): void {
    const existing = this.writes.get(write.workflowId);
    if (existing) mergeWrite(existing, write);
    else this.writes.set(write.workflowId, write);
    this.events += write.history.length;
    if (callback) this.onDurable.push({ workflowId: write.workflowId, callback });
  }

  /** Whether all these writes and starts stay within `maxChars`. */
  fits(maxChars: number): boolean {
    let chars = 0;
    for (const write of this.writes.values()) if ((chars += writeChars(write)) > maxChars) return false;
    for (const { row } of this.starts) if ((chars += startChars(row)) > maxChars) return false;
    return true;
  }

  /**
   * Moves into a new batch, in append order, the writes of workflows that no batch in `busy` (those
   * in flight) holds, and then the starts whose id is neither held there nor has a write left here,
   * until the next would take it past
   * `maxChars` (the first write and the first start are taken whatever their size). The rest (and
   * their callbacks) stay for a later flush, so two flushes in flight never hold the same id. A start goes with a write of its
   * id, so a step that creates its workflow still meets, in the same batch, a start of that id
   * appended after it, and wins (see `startsToInsert`).
   */
  split(busy: ReadonlySet<Batch>, maxChars: number): Batch {
    const taken = new Batch();
    let chars = 0;
    for (const [id, write] of this.writes) {
      if (isHeld(busy, id)) continue;
      chars += writeChars(write);
      if (taken.writes.size > 0 && chars > maxChars) break;
      taken.writes.set(id, write);
      taken.events += write.history.length;
      this.events -= write.history.length;
      this.writes.delete(id);
    }
    const keptStarts: PendingStart[] = [];
    // Once one start waits, every later one does: the first start of an id must stay first.
    let isFull = false;
    for (const start of this.starts) {
      const id = start.row.id;
      let isTaken: boolean;
      if (taken.writes.has(id)) {
        isTaken = true; // whatever its size: it must meet the step that creates its workflow
      } else if (isFull || this.writes.has(id) || isHeld(busy, id)) {
        isTaken = false;
      } else {
        chars += startChars(start.row);
        // The first start goes whatever room the writes left, or a steady stream of writes that
        // fill every flush would keep it waiting for as long as the load lasts.
        isFull = taken.starts.length > 0 && chars > maxChars;
        isTaken = !isFull;
      }
      (isTaken ? taken.starts : keptStarts).push(start);
    }
    this.starts = keptStarts;
    const kept: Batch['onDurable'] = [];
    for (const entry of this.onDurable) (taken.writes.has(entry.workflowId) ? taken.onDurable : kept).push(entry);
    this.onDurable = kept;
    return taken;
  }

  /** Removes the writes of `ids` and their callbacks; adds the writes removed to `into`, if given. */
  discard(ids: ReadonlySet<string>, into?: Map<string, WorkflowWrite[]>): void {
    for (const id of ids) {
      const write = this.writes.get(id);
      if (!write) continue;
      this.events -= write.history.length;
      this.writes.delete(id);
      if (into) discardedInto(into, id, write);
    }
    for (let i = this.onDurable.length - 1; i >= 0; i--) {
      if (ids.has(this.onDurable[i]!.workflowId)) this.onDurable.splice(i, 1);
    }
  }
}

function discardedInto(into: Map<string, WorkflowWrite[]>, workflowId: string, write: WorkflowWrite): void {
  const writes = into.get(workflowId);
  if (writes) writes.push(write);
  else into.set(workflowId, [write]);
}

/**
 * Folds `next` (a later write of the same workflow) into `into`. A timer or task inserted by
 * `into` and deleted by `next` never reaches the database: the flush is one statement whose parts
 * cannot see each other's rows.
 */
export function mergeWrite(into: WorkflowWrite, next: WorkflowWrite): void {
  // Loops, not spreads: a step of a wide fan-out can carry more rows than an argument list holds.
  for (const row of next.history) into.history.push(row);
  if (next.status !== undefined) into.status = next.status;
  if (next.vars !== undefined) into.vars = next.vars;
  if (next.result !== undefined) into.result = next.result;
  if (next.error !== undefined) into.error = next.error;
  if (next.startedAt !== undefined) into.startedAt = next.startedAt;
  if (next.completedAt !== undefined) into.completedAt = next.completedAt;
  for (const timer of next.timersInsert) into.timersInsert = appended(into.timersInsert, timer);
  for (const commandId of next.timersDelete) deleteTimer(into, commandId);
  for (const task of next.tasksUpsert) upsertTask(into, task);
  for (const commandId of next.tasksDelete) deleteTask(into, commandId);
  for (const id of next.inboxDelete) into.inboxDelete = appended(into.inboxDelete, id);
  into.isTerminal ||= next.isTerminal;
  into.creates ??= next.creates;
}

/** The epoch of a write whose name this engine did not hold: no lease has it, so its flush fails. */
const NO_LEASE = '0';

/** The (name, epoch) pairs the writes were built under, each once. */
function fenceOf(owner: string, writes: readonly WorkflowWrite[]): FenceParams {
  const names: string[] = [];
  const epochs: string[] = [];
  // A batch holds a handful of names: a linear look beats building a key per write.
  for (const { workflowName, leaseEpoch = NO_LEASE } of writes) {
    let isKnown = false;
    for (let i = 0; i < names.length && !isKnown; i++) isKnown = names[i] === workflowName && epochs[i] === leaseEpoch;
    if (isKnown) continue;
    names.push(workflowName);
    epochs.push(leaseEpoch);
  }
  return { owner, names, epochs };
}

/**
 * The starts a batch inserts, by id. One row per id, or the statement fails as a whole: the first
 * start of an id, and none for an id a step of this batch creates (its first step has run already).
 * A start not in here resolves false: its id was taken.
 */
function startsToInsert(batch: Batch): Map<string, NewWorkflowRow> {
  const starts = new Map<string, NewWorkflowRow>();
  for (const { row } of batch.starts) {
    if (!starts.has(row.id) && batch.writes.get(row.id)?.creates === undefined) starts.set(row.id, row);
  }
  return starts;
}

/**
 * The write-ahead batch: every actor appends here, one flusher commits everything appended since
 * the previous flush in a single transaction (group commit), then runs the durable callbacks in
 * append order.
 *
 * Modes:
 * - idle: nothing pending, no flush in flight. An append schedules a flush for the end of the
 *   current turn of the event loop, so a lone workflow is not held back by a batching timer.
 * - flushing: up to `maxFlushesInFlight` batches are being committed, each on its own connection
 *   and over workflows no other in-flight batch has; appends fill the next batch (pipelining).
 *   When a commit ends, the next batch starts at once if it has anything. Writes of a workflow
 *   whose earlier writes are still in flight wait for them.
 * - retrying: the flush failed with a transient error (connection lost, database restarting);
 *   the same batch is committed again after a backoff. Nothing in it was released.
 * - closed: appends are refused; `close()` resolved after the last batch committed or failed.
 * - abandoned (`abandon()`, from closed): a failed try is not tried again, and a backoff under
 *   way ends at once; the database is given up on, so what has not committed fails.
 *
 * A batch that fails for good (a history row that exists already, i.e. a writer with a stale view;
 * any other constraint violation) is discarded together with the later writes of the same
 * workflows, and `onFlushFailed` names them. So is one the lease check refuses, except its starts,
 * which need no lease: they go first in the next flush. And so is one whose answer was lost and
 * whose outcome is still unknown `UNRESOLVED_LIMIT_MS` after its first try (`FlushOutcomeUnknownError`),
 * except its starts, which find their own rows by their tokens.
 */
export class Wal {
  readonly #options: WalOptions;
  #pending = new Batch();
  /** Batches being committed: a workflow with a write or a start in one is not flushed again until it ends. */
  readonly #inFlight = new Set<Batch>();
  readonly #maxInFlight: number;
  readonly #maxChars: number;
  #isScheduled = false;
  #isClosed = false;
  /** Aborted by abandon(): ends the backoffs between tries. */
  readonly #abandon = new AbortController();
  #isBackpressureOff = false;
  #lastCleanup = 0;
  #cleaning: Promise<void> | undefined;
  #idleWaiters: (() => void)[] = [];
  #uncongestedWaiters: (() => void)[] = [];

  constructor(options: WalOptions) {
    this.#options = options;
    this.#maxInFlight = Math.max(1, options.maxFlushesInFlight ?? 2);
    this.#maxChars = options.maxFlushChars ?? 32 * 1024 * 1024;
  }

  /** History rows waiting for a flush, in flight included. */
  get pendingEvents(): number {
    let events = this.#pending.events;
    for (const batch of this.#inFlight) events += batch.events;
    return events;
  }

  /** Whether a flush is being committed now. */
  get isFlushing(): boolean {
    return this.#inFlight.size > 0;
  }

  /** Whether `close()` was called: appends are refused from then on. */
  get isClosed(): boolean {
    return this.#isClosed;
  }

  /** Flushes being committed now. */
  get flushesInFlight(): number {
    return this.#inFlight.size;
  }

  /** Whether appenders should wait (`whenUncongested`) before producing more. */
  get isCongested(): boolean {
    return !this.#isBackpressureOff && this.pendingEvents > this.#options.highWaterEvents;
  }

  /**
   * Lets appenders go on without waiting for room from now on, those waiting included: their
   * owner is closing, so only what is queued already still comes, and a flush retrying while the
   * database is away must not hold those steps (and the close waiting for them) until it is back.
   */
  endBackpressure(): void {
    this.#isBackpressureOff = true;
    this.#wakeUncongested();
  }

  /** Resolves once the pending events fall below the high-water mark. */
  whenUncongested(): Promise<void> {
    if (!this.isCongested) return Promise.resolve();
    return new Promise((resolve) => this.#uncongestedWaiters.push(resolve));
  }

  /**
   * Buffers a workflow's write; `onDurable` runs after the statement holding it commits, and
   * never if it fails. For a write that creates its workflow (`creates`), `isRefused` tells that
   * the id was taken and nothing of the write was stored. The WAL takes ownership of `write`
   * (later writes of the same workflow are merged into it): the caller must not touch it again.
   */
  enqueue(write: WorkflowWrite, onDurable?: (isRefused: boolean) => void): void {
    if (this.#isClosed) throw new WalClosedError();
    // Stamped now, not at the flush: the write was built on what the engine knew under this epoch.
    if (this.#options.lease) write.leaseEpoch = this.#options.lease.epochOf(write.workflowName) ?? NO_LEASE;
    this.#pending.add(write, onDurable);
    this.#schedule();
  }

  /**
   * Buffers the creation of a workflow; resolves after commit with false if the id existed (or was
   * taken by an earlier start of the same batch).
   */
  enqueueStart(row: NewWorkflowRow): Promise<boolean> {
    if (this.#isClosed) return Promise.reject(new WalClosedError());
    return new Promise((resolve, reject) => {
      this.#pending.starts.push({ row, resolve, reject });
      this.#schedule();
    });
  }

  /** Resolves when everything appended so far has been committed (or has failed). */
  drain(): Promise<void> {
    if (this.#pending.isEmpty && this.#inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Stops trying again (the owner's close ran out of time): each flush, in flight or pending,
   * makes one more try at most and fails for good if that fails, as it does at once when the
   * owner has aborted the statements of a database that does not answer. Refuses appends, as
   * `close()` does.
   */
  abandon(): void {
    this.#isClosed = true;
    this.#abandon.abort();
  }

  /** Refuses further appends, then commits what is pending. */
  async close(): Promise<void> {
    this.#isClosed = true;
    await this.drain();
    await this.#cleaning;
  }

  #schedule(): void {
    if (this.#isScheduled || this.#inFlight.size >= this.#maxInFlight) return;
    this.#isScheduled = true;
    const start = (): void => {
      this.#isScheduled = false;
      this.#startFlushes();
    };
    // Idle: flush as soon as the appending code's synchronous run and its microtasks are done, so
    // a lone workflow waits for nothing. Busy (a flush in flight): wait for the end of this turn
    // of the event loop, so the free slot takes a full batch rather than the first append.
    if (this.#inFlight.size === 0) queueMicrotask(start);
    else setImmediate(start);
  }

  #startFlushes(): void {
    while (this.#inFlight.size < this.#maxInFlight && !this.#pending.isEmpty) {
      let batch: Batch;
      // All that is pending, if none of its workflows is in flight (the usual case: a workflow's
      // next step waits for the commit of its last) and it fits; else split. A write is measured
      // here or by the split, not both, unless the batch is too big.
      if (!this.#pending.meets(this.#inFlight) && this.#pending.fits(this.#maxChars)) {
        batch = this.#pending;
        this.#pending = new Batch();
      } else {
        batch = this.#pending.split(this.#inFlight, this.#maxChars);
        if (batch.isEmpty) break; // everything pending waits for a flush in flight
      }
      void this.#flush(batch);
    }
  }

  async #flush(batch: Batch): Promise<void> {
    if (batch.starts.length > 0) batch.startIds = new Set(batch.starts.map(({ row }) => row.id));
    this.#inFlight.add(batch);
    // Never throws: the commit's failures are handled, and the owner's callbacks go through #report.
    await this.#commitWithRetry(batch);
    this.#cleanUpNowAndThen();
    this.#inFlight.delete(batch);
    this.#wakeUncongested();
    this.#startFlushes();
    if (this.#inFlight.size === 0 && this.#pending.isEmpty) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  async #commitWithRetry(batch: Batch): Promise<void> {
    const token = randomUUID();
    let starts = startsToInsert(batch);
    let inserted: Set<string> | undefined;
    // Set once a try failed in a way that leaves its outcome unknown (the connection dropped
    // around the commit): every later failure first asks whether that try committed after all.
    // Its value: the first try's time on the wall clock, as the database expires tokens by its own
    // (which a suspended machine's monotonic clock would fall behind); read then, not at every flush.
    let ambiguousSince: number | undefined;
    // The cause given when the flush is given up.
    let lastError: unknown;
    // A try's own time, or since the first try when only a later check found it committed.
    let seconds = 0;
    const firstStarted = performance.now();
    for (let attempt = 1; ; attempt++) {
      const started = performance.now();
      try {
        if (ambiguousSince !== undefined && Date.now() - ambiguousSince >= UNRESOLVED_LIMIT_MS) {
          throw new FlushOutcomeUnknownError({ cause: lastError });
        }
        inserted = await this.#commit(batch, starts, token);
        seconds = (performance.now() - started) / 1000;
        break;
      } catch (error) {
        lastError = error;
        const isRetryableError = isRetryable(error);
        if (isRetryableError) ambiguousSince ??= Date.now() - (performance.now() - firstStarted);
        // After a try whose outcome is unknown, any failure (this flush's own token taken, say)
        // first asks whether that try committed. No answer is no verdict: try again (until the
        // limit, past which only a token found is an answer).
        let isUnanswered = false;
        if (ambiguousSince !== undefined) {
          const earlier = await this.#committedEarlier(token);
          if (earlier) {
            inserted = earlier;
            seconds = (performance.now() - firstStarted) / 1000;
            break;
          }
          isUnanswered = earlier === undefined;
        }
        // Past the limit, nothing is tried again.
        const isTransient = (isRetryableError || isUnanswered) && !(error instanceof FlushOutcomeUnknownError);
        // Closing gives a lost connection a few more tries, not an outage's worth of them.
        const willRetry = isTransient && !this.#abandon.signal.aborted && (!this.#isClosed || attempt < CLOSING_RETRIES);
        // Refused for a lease lost: only the writes made under it fail. The others go again at
        // once (the statement stored nothing), rather than be rebuilt and their activities run again.
        const isLeaseLost = !willRetry && error instanceof LeaseLostError && !this.#isClosed;
        const lost = isLeaseLost ? await this.#writesUnderLostLeases(batch) : undefined;
        const isPartial = lost !== undefined && lost.size > 0 && lost.size < batch.writes.size;
        this.#report(() => this.#options.observer?.flushFailed(error, willRetry || isPartial));
        if (willRetry) {
          // Cut short by abandon(): then one more try, which an aborted driver fails at once.
          await pause(retryDelayMs(attempt, 50, 5_000), this.#abandon.signal);
          continue;
        }
        if (isPartial) {
          const discarded = new Map<string, WorkflowWrite[]>();
          // Out of the batch, so no longer in flight: later writes of theirs may go.
          batch.discard(lost, discarded);
          this.#pending.discard(lost, discarded);
          this.#report(() => this.#options.onFlushFailed(lost, error, discarded));
          // A start meets again the step that would have created its workflow.
          starts = startsToInsert(batch);
          continue;
        }
        this.#fail(batch, error);
        return;
      }
    }
    // A refused creation wrote nothing, and its later writes were built on a workflow that is
    // someone else's.
    const refused = new Set<string>();
    let refusedEvents = 0;
    for (const [id, write] of batch.writes) {
      if (write.creates === undefined || inserted.has(id)) continue;
      refused.add(id);
      refusedEvents += write.history.length;
    }
    // Committed: whatever an observer or callback does, the batch stays committed and the
    // others still run.
    this.#report(() =>
      this.#options.observer?.flushed({
        events: batch.events - refusedEvents,
        writes: batch.writes.size - refused.size,
        starts: batch.starts.length,
        seconds,
      }),
    );
    for (const start of batch.starts) start.resolve(inserted.has(start.row.id) && starts.get(start.row.id) === start.row);
    if (refused.size > 0) this.#pending.discard(refused);
    // One per write, on every step's path: no closure for #report.
    for (const { workflowId, callback } of batch.onDurable) {
      try {
        callback(refused.has(workflowId));
      } catch (error) {
        this.#callbackFailed(error);
      }
    }
  }

  /**
   * Runs an observer or a callback of the WAL's owner (which logs, say, with a logger that may
   * throw): what it throws goes to `callbackFailed`, and never stops the WAL.
   */
  #report(call: () => void): void {
    try {
      call();
    } catch (error) {
      this.#callbackFailed(error);
    }
  }

  #callbackFailed(error: unknown): void {
    try {
      this.#options.observer?.callbackFailed(error);
    } catch {
      // Reporting failed too: nothing is left to tell.
    }
  }

  /**
   * The workflows of `batch` whose write was made under a lease epoch this engine does not hold
   * now; undefined if the database did not say.
   */
  async #writesUnderLostLeases(batch: Batch): Promise<Set<string> | undefined> {
    const lease = this.#options.lease;
    if (!lease) return undefined;
    const names = new Set<string>();
    for (const write of batch.writes.values()) names.add(write.workflowName);
    let held: Map<string, string>;
    try {
      held = await heldEpochs(this.#options.sql, this.#options.tables, lease.owner, [...names]);
    } catch {
      return undefined;
    }
    const lost = new Set<string>();
    for (const [id, write] of batch.writes) if (held.get(write.workflowName) !== (write.leaseEpoch ?? NO_LEASE)) lost.add(id);
    return lost;
  }

  #fail(batch: Batch, error: unknown): void {
    if ((error instanceof LeaseLostError || error instanceof FlushOutcomeUnknownError) && !this.#isClosed) {
      // Starts need no lease, and one that committed finds its own row by its token.
      this.#startFirst(batch.starts);
    } else {
      // A flush failed for good by a write (a stale writer's history, say) would fail the starts
      // beside it with that write's error: each goes again once, first, and fails only with a
      // flush of its own second try. Starts alone failed by themselves; and closing, no flush is
      // left to try again.
      const mayGoAgain = batch.writes.size > 0 && !this.#isClosed;
      const again: PendingStart[] = [];
      for (const start of batch.starts) {
        if (!mayGoAgain || start.hasWaitedOut) {
          start.reject(error);
        } else {
          start.hasWaitedOut = true;
          again.push(start);
        }
      }
      this.#startFirst(again);
    }
    const ids = new Set(batch.writes.keys());
    const discarded = new Map<string, WorkflowWrite[]>();
    for (const [id, write] of batch.writes) discarded.set(id, [write]);
    // Later writes of these workflows were built on the state that just failed to commit.
    this.#pending.discard(ids, discarded);
    if (ids.size > 0) this.#report(() => this.#options.onFlushFailed(ids, error, discarded));
  }

  /** Puts `starts` back, ahead of those waiting, for the next flush. */
  #startFirst(starts: PendingStart[]): void {
    if (starts.length === 0) return;
    // Not a spread: a burst of starts can be more than an argument list holds.
    this.#pending.starts = starts.concat(this.#pending.starts);
    this.#schedule();
  }

  /**
   * Deletes what has expired, after the first flush and then at most once a minute, in the
   * background and in chunks: a backlog (after a long stop, say) must not hold up a flush.
   */
  #cleanUpNowAndThen(): void {
    const now = Date.now();
    if (this.#isClosed || this.#cleaning || now - this.#lastCleanup < CLEANUP_INTERVAL_MS) return;
    this.#lastCleanup = now;
    this.#cleaning = deleteExpired(this.#options.sql, this.#options.tables, () => this.#isClosed)
      .catch((error: unknown) => this.#report(() => this.#options.observer?.cleanupFailed(error)))
      .finally(() => {
        this.#cleaning = undefined;
      });
  }

  async #commit(batch: Batch, starts: ReadonlyMap<string, NewWorkflowRow>, token: string): Promise<Set<string>> {
    const writes = [...batch.writes.values()];
    const lease = this.#options.lease;
    const fence = lease && writes.length > 0 ? fenceOf(lease.owner, writes) : undefined;
    const { inserted } = await flushBatch(this.#options.sql, this.#options.tables, [...starts.values()], writes, {
      token,
      maxJsonbChars: this.#options.maxJsonbChars,
      fence,
    });
    return inserted;
  }

  /**
   * The workflows an earlier try of the flush with `token` created if it committed, false if it
   * did not, undefined if the database did not answer.
   */
  async #committedEarlier(token: string): Promise<Set<string> | false | undefined> {
    try {
      return (await committedFlush(this.#options.sql, this.#options.tables, token)) ?? false;
    } catch {
      return undefined;
    }
  }

  #wakeUncongested(): void {
    if (this.isCongested || this.#uncongestedWaiters.length === 0) return;
    const waiters = this.#uncongestedWaiters;
    this.#uncongestedWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
