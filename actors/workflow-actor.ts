import { appended, NO_ITEMS } from '../storage/lists.js';
import { changesRow, deleteTask, deleteTimer, emptyWrite, upsertTask, withTask } from '../storage/rows.js';
import type {
  HistoryRow,
  NewWorkflowRow,
  StoredHistoryRow,
  TaskRow,
  WorkflowRow,
  WorkflowWrite,
} from '../storage/rows.js';
import { type ActorHost, type Effects, noEffects } from './actor-host.js';
import type { ActorOwner } from './actor-owner.js';
import { describeIdentity, identityOf } from './commands.js';
import { drainWorkflowCode } from './drain-workflow-code.js';
import {
  completedPayload,
  EventType,
  jsonObject,
  outcomesIn,
  scheduledPayload,
  type SerializedFailure,
  str,
} from './history.js';
import { replayHistory } from './history-replay.js';
import { Mailbox } from './mailbox.js';
import type { ActorMessage } from './messages.js';
import { type Outstanding, ReplayState, type StrayCall } from './replay-state.js';
import { WorkflowContextImpl } from './workflow-context.js';

/** Where an actor is in its life. */
type ActorState =
  /** Created; its row and history are not loaded yet. */
  | 'new'
  /** Its row is `pending`: it waits for its start (events are kept until then). */
  | 'unstarted'
  /** Running in memory, replay done. */
  | 'live'
  /**
   * Completed or failed; ignores what still reaches it. An event stored before the end committed
   * stays unconsumed, shown in `queuedEvents` until the hourly cleanup deletes it (the inbox reads
   * skip ended workflows, so it is not delivered again).
   */
  | 'done'
  /** Replay did not match the code (NonDeterminismError): ignores messages until rebuilt. */
  | 'parked'
  /** Discarded (failed load or flush); the system forgets it. */
  | 'dropped';

/**
 * A workflow this engine creates together with its first step (see `WorkflowWrite.creates`):
 * the row to insert, and whom to tell how the insert went.
 */
export interface Creation {
  row: NewWorkflowRow;
  /** The row and the first step committed. */
  onCreated(): void;
  /**
   * The id was taken: nothing was stored, and this actor is gone. `held` are the messages that
   * reached it meanwhile; they are the stored workflow's.
   */
  onRefused(held: ActorMessage[]): void;
  /** The actor failed before its first step committed; `held` as for `onRefused`. */
  onFailed(error: unknown, held: ActorMessage[]): void;
}

/** What `inspect` can read from a hot actor. */
export interface ActorSnapshot {
  vars: Record<string, unknown>;
  outstanding: Outstanding;
}

/**
 * Whether the stored error `stored` already says `failure`: the same divergence (its message names
 * it whole), whatever the stack.
 */
function isSameParking(stored: string | null, failure: SerializedFailure): boolean {
  if (stored === null) return false;
  try {
    const was = JSON.parse(stored) as SerializedFailure;
    return was.name === failure.name && was.message === failure.message;
  } catch {
    return false;
  }
}

/**
 * One workflow execution in memory. Its mailbox hands it batches of messages; each batch becomes
 * one activation: the inbound events are recorded and fed to the workflow code, the code runs
 * until it is blocked again, and its commands become history rows and side effects. The rows go
 * to the WAL; the side effects go back to the engine only after the WAL committed them.
 *
 * On creation the actor loads its row and replays its history (activation by activation, in the
 * recorded batches) to rebuild the same in-memory state, comparing every command with the
 * recorded one.
 */
export class WorkflowActor {
  readonly workflowId: string;
  readonly #host: ActorHost;
  readonly #mailbox: Mailbox<ActorMessage>;
  readonly #owner: ActorOwner;
  #seed: WorkflowRow | undefined;
  #creation: Creation | undefined;
  #state: ActorState = 'new';
  #name = '';
  #version = '';
  #input: string | null = null;
  #parkedError: string | null = null;
  #replay: ReplayState | undefined;
  #seq = 0;
  #activation = 0;
  /** Time of the WorkflowStarted event (epoch ms). */
  #startedAt = 0;
  #unflushed = 0;
  /** The batch being handled until its step is handed to the WAL (see `killUncommitted`). */
  #inHand: readonly ActorMessage[] | undefined;
  /** Messages that arrived while the creation was uncommitted, in arrival order. */
  #held: ActorMessage[] = [];
  /** Inbox rows this workflow consumed (created on first event). */
  #consumedInbox: Set<number> | undefined;
  /** Whether events reached the actor before the start and were left in the inbox for it. */
  #hasEventsBeforeStart = false;
  /**
   * Activities that may have a task row and an armed retry although the attempt that ends them
   * is a first one: those this actor stored a retry for, and those outstanding when it was
   * rebuilt. A recovery re-runs a first attempt whose retry had not committed yet when it looked.
   */
  #mayBeRetried: Set<number> | undefined;

  constructor(
    workflowId: string,
    host: ActorHost,
    owner: ActorOwner,
    seed?: WorkflowRow,
    creation?: Creation,
  ) {
    this.workflowId = workflowId;
    this.#host = host;
    this.#owner = owner;
    this.#seed = seed;
    this.#creation = creation;
    this.#mailbox = new Mailbox<ActorMessage>(
      (batch, receivedAt) => this.#handle(batch, receivedAt),
      (error, batch) => this.#crash(error, batch),
      () => this.#onIdle(),
    );
  }

  /** Messages waiting in the mailbox. */
  get queued(): number {
    return this.#mailbox.depth;
  }

  /** Whether the actor can leave memory without losing anything. */
  get isEvictable(): boolean {
    return (
      this.#mailbox.isIdle &&
      this.#unflushed === 0 &&
      this.#creation === undefined &&
      this.#held.length === 0
    );
  }

  /**
   * Whether the workflow waits for an activity's result: the actor is needed again as soon as the
   * attempt ends, so evicting it would only make it replay its history then.
   */
  get awaitsActivity(): boolean {
    return this.#state === 'live' && (this.#replay?.awaitsActivity() ?? false);
  }

  get isFinished(): boolean {
    return this.#state === 'done' || this.#state === 'dropped';
  }

  /**
   * Whether this actor will run the workflow to its end (so its end will be announced here): it is
   * new, waiting for its start, or live. Not when finished, dropped or parked, and not while the
   * workflow's creation is uncommitted: the id may turn out to be someone else's.
   */
  get isRunning(): boolean {
    if (this.#creation) return false;
    if (this.#state === 'new') return this.#seed?.status === 'pending';
    return this.#state === 'unstarted' || this.#state === 'live';
  }

  push(message: ActorMessage): void {
    this.#mailbox.push(message);
  }

  /** Live variables and outstanding commands, if the actor is running in memory. */
  snapshot(): ActorSnapshot | undefined {
    // While a creation is uncommitted the id may be another workflow's: show the stored one.
    if (this.#state !== 'live' || !this.#replay || this.#creation) return undefined;
    return { vars: this.#replay.vars(), outstanding: this.#replay.outstanding() };
  }

  /** The workflow's name, once its row is known (empty while it loads). */
  get workflowName(): string {
    return this.#name;
  }

  /** Stops the actor for good; nothing it has not flushed will be released. */
  kill(): void {
    this.#state = 'dropped';
    this.#mailbox.kill();
  }

  /**
   * Stops the actor for good because its writes not yet committed were discarded (their flush
   * failed); returns the messages whose sources the database may not have: the activity outcomes
   * the `discarded` writes took (oldest first), then the batch it was handling, what it held and
   * what was queued. A retry among them keeps its attempt count and backoff only if the rebuild
   * gets it.
   */
  killUncommitted(discarded: readonly WorkflowWrite[]): ActorMessage[] {
    const handed: ActorMessage[] = [];
    for (const write of discarded) outcomesIn(write, handed);
    for (const message of this.#inHand ?? NO_ITEMS) handed.push(message);
    this.#inHand = undefined;
    for (const message of this.#drop()) handed.push(message);
    return handed;
  }

  /** Resolves when the mailbox has nothing left to run. */
  drained(): Promise<void> {
    return this.#mailbox.drained();
  }

  /** The mailbox ran dry. With nothing written, no commit will say the actor may give way. */
  #onIdle(): void {
    if (this.#unflushed === 0 && this.#state !== 'dropped') this.#owner.idleWithoutWrite(this);
  }

  #handle(batch: readonly ActorMessage[], receivedAt: number): Promise<void> {
    // The usual step, a live workflow's with room in the WAL, goes straight to its activation:
    // one async frame a step fewer.
    if (this.#state === 'live' && !this.#creation && !this.#host.wal.isCongested) {
      this.#inHand = batch;
      return this.#activate(batch, receivedAt);
    }
    return this.#handleOther(batch, receivedAt);
  }

  async #handleOther(batch: readonly ActorMessage[], receivedAt: number): Promise<void> {
    if (this.#creation && this.#state !== 'new') {
      // After the creating step, until its commit: holding writes nothing, so it need not wait
      // for room in the WAL, and no batch is left in hand when a refusal drops the actor.
      for (const message of batch) this.#held.push(message);
      return;
    }
    // Until #activate takes it (or it is held): a load or a wait for room may be cut short by a
    // failed flush.
    this.#inHand = batch;
    if (this.#state === 'new' && !(await this.#load(batch))) return;
    if (this.#host.wal.isCongested) await this.#host.wal.whenUncongested();
    if (this.#state === 'dropped') return;
    let messages = batch;
    if (this.#creation) {
      // Until the creation commits, the id may turn out to be another workflow's, and whatever
      // else arrives (its events, activity results, timers, start) is that workflow's: only the
      // creating start runs now; the rest waits for the outcome.
      const startAt = this.#state === 'unstarted' ? messages.findIndex(isStart) : -1;
      for (let i = 0; i < messages.length; i++) if (i !== startAt) this.#held.push(messages[i]!);
      this.#inHand = undefined;
      if (startAt < 0) return;
      messages = [messages[startAt]!];
    }
    switch (this.#state) {
      case 'unstarted': {
        const startAt = messages.findIndex(isStart);
        // Events sent before the start wait for it in the inbox, not here, and are read again
        // after it, in the order they were sent. Held here, one would overtake events sent earlier
        // from elsewhere, and keep the actor in memory until the start (a delayed start's, for
        // hours).
        if (startAt < 0) {
          this.#hasEventsBeforeStart ||= messages.some((m) => m.type === 'event');
          this.#inHand = undefined;
          return;
        }
        // The start comes first, whatever order the messages arrived in.
        const start = messages[startAt]!;
        await this.#activate([start, ...messages.filter((_, i) => i !== startAt)], receivedAt);
        if (this.#hasEventsBeforeStart) {
          this.#hasEventsBeforeStart = false;
          this.#host.readInbox(this.workflowId);
        }
        return;
      }
      case 'live':
        await this.#activate(messages, receivedAt);
        return;
      default:
        this.#inHand = undefined;
        return;
    }
  }

  async #activate(messages: readonly ActorMessage[], receivedAt: number): Promise<void> {
    const host = this.#host;
    const now = Date.now();
    const activation = this.#activation + 1;
    const write = emptyWrite(this.workflowId, this.#name);
    const effects = noEffects(this.#name);
    let rs = this.#replay;
    if (rs) {
      rs.now = now;
      rs.isInStep = true;
    }

    for (const m of messages) {
      switch (m.type) {
        case 'start': {
          if (this.#state !== 'unstarted') break;
          // Before anything is recorded: an input that cannot be decoded fails the actor.
          const input = this.#decodedInput();
          this.#record(
            write,
            activation,
            now,
            EventType.WorkflowStarted,
            null,
            jsonObject({ workflowName: str(this.#name), version: str(this.#version), input: this.#input ?? undefined }),
          );
          write.status = 'running';
          write.startedAt = now;
          if (this.#creation) write.creates = this.#creation.row;
          this.#startedAt = now;
          effects.isStarted = true;
          this.#state = 'live';
          rs = this.#begin(now, input);
          break;
        }
        case 'timerFired':
          if (!rs) break;
          // The row goes even for a wait that is over: left (by an older version, say), it would
          // fire at every start.
          write.timersDelete = appended(write.timersDelete, m.commandId);
          if (!rs.isPending(m.commandId, 'timer') && !rs.isPending(m.commandId, 'event')) break;
          this.#record(write, activation, now, EventType.TimerFired, m.commandId, null);
          rs.fireTimer(m.commandId);
          break;
        case 'activityCompleted':
          if (!rs?.isPending(m.commandId, 'activity')) break;
          this.#record(
            write,
            activation,
            now,
            EventType.ActivityCompleted,
            m.commandId,
            completedPayload(rs.nameOf(m.commandId), m.attempts, m.result),
          );
          this.#endRetries(m.commandId, m.attempts, write, effects);
          rs.resolveActivity(m.commandId, host.codec.decode(m.result));
          break;
        case 'activityFailed': {
          if (!rs?.isPending(m.commandId, 'activity')) break;
          const activityName = rs.nameOf(m.commandId);
          this.#record(
            write,
            activation,
            now,
            EventType.ActivityFailed,
            m.commandId,
            jsonObject({
              activityName: str(activityName),
              attempts: String(m.attempts),
              failure: JSON.stringify(m.failure),
            }),
          );
          this.#endRetries(m.commandId, m.attempts, write, effects);
          effects.failures = appended(effects.failures, { activityName, failure: m.failure });
          rs.rejectActivity(m.commandId, m.attempts, m.failure);
          break;
        }
        case 'activityRetry':
          if (!rs?.isPending(m.commandId, 'activity')) break;
          // Two attempts' outcomes can come together (a recovery ran one again): the later wins.
          upsertTask(write, m.task);
          effects.retries = withTask(effects.retries, m.task);
          (this.#mayBeRetried ??= new Set()).add(m.commandId);
          break;
        case 'event': {
          if (!rs || this.#consumedInbox?.has(m.inboxId)) break;
          if (m.unconsumedBefore !== undefined && !this.#hasTaken(m.unconsumedBefore)) {
            // Taken now, it would overtake them: the inbox read hands them all over in the order stored.
            host.readInbox(this.workflowId);
            break;
          }
          (this.#consumedInbox ??= new Set()).add(m.inboxId);
          const row = this.#record(write, activation, now, EventType.EventReceived, null, null);
          write.inboxDelete = appended(write.inboxDelete, m.inboxId);
          const { waiter, hadTimeout } = rs.deliverEvent(m.name, this.#decodedEvent(m.name, m.payload));
          // Which wait the event resolved is recorded so inspect can tell open waits from history.
          row.payload = jsonObject({
            eventName: str(m.name),
            inboxId: String(m.inboxId),
            resolves: waiter === undefined ? undefined : String(waiter),
            payload: m.payload,
          });
          if (hadTimeout) {
            write.timersDelete = appended(write.timersDelete, waiter!);
            effects.disarmTimers = appended(effects.disarmTimers, waiter!);
          }
          break;
        }
      }
    }

    if (rs && write.history.length > 0) {
      await drainWorkflowCode();
      if (this.#state !== 'live') return; // killed while the code ran
      this.#activation = activation;
      this.#recordCommands(rs, write, effects, activation, now);
      const vars = rs.takeChangedVars();
      if (vars !== undefined) write.vars = vars;
    }
    if (rs) rs.isInStep = false;
    if (write.history.length > 0) effects.receivedAt = receivedAt;
    this.#enqueue(write, effects);
    // From here the WAL holds the outcomes this step took, in its write, until the step commits
    // (a failed flush hands the write back). Not before: a kill while the code ran must find them.
    this.#inHand = undefined;
  }

  /**
   * An activity ended: its task row (its retry state) goes, and a retry armed for it is disarmed.
   * Only a retried activity has them: a first attempt's end writes nothing unless this actor
   * stored a retry for it or was rebuilt while it was open (then the delete may find no row).
   */
  #endRetries(commandId: number, attempts: number, write: WorkflowWrite, effects: Effects): void {
    const mayBeRetried = this.#mayBeRetried?.delete(commandId) ?? false;
    if (attempts === 1 && !mayBeRetried) return;
    deleteTask(write, commandId);
    effects.disarmRetries = appended(effects.disarmRetries, commandId);
  }

  #recordCommands(
    rs: ReplayState,
    write: WorkflowWrite,
    effects: Effects,
    activation: number,
    now: number,
  ): void {
    for (const c of rs.takeCommands()) {
      switch (c.kind) {
        case 'scheduleActivity': {
          this.#record(
            write,
            activation,
            now,
            EventType.ActivityScheduled,
            c.commandId,
            scheduledPayload(c.name, c.input, c.options),
          );
          // The event is the durable record of a first attempt: no task row until a retry.
          const task: TaskRow = {
            workflowId: this.workflowId,
            commandId: c.commandId,
            name: c.name,
            input: c.input,
            options: c.options,
            attempt: 1,
            visibleAt: now,
            scheduledAt: now,
            lastFailure: null,
          };
          effects.dispatch = appended(effects.dispatch, task);
          break;
        }
        case 'startTimer': {
          this.#record(write, activation, now, EventType.TimerStarted, c.commandId, jsonObject({ dueAt: String(c.dueAt) }));
          const timer = { workflowId: this.workflowId, commandId: c.commandId, dueAt: c.dueAt };
          write.timersInsert = appended(write.timersInsert, timer);
          effects.armTimers = appended(effects.armTimers, timer);
          break;
        }
        case 'waitEvent': {
          const timeoutAt = c.timeoutAt === undefined ? undefined : String(c.timeoutAt);
          this.#record(write, activation, now, EventType.EventWaitStarted, c.commandId, jsonObject({ eventName: str(c.name), timeoutAt }));
          // A wait that took its event in this very step (recorded before it) has nothing to time out.
          if (c.timeoutAt !== undefined && rs.isPending(c.commandId, 'event')) {
            const timer = { workflowId: this.workflowId, commandId: c.commandId, dueAt: c.timeoutAt };
            write.timersInsert = appended(write.timersInsert, timer);
            effects.armTimers = appended(effects.armTimers, timer);
          }
          break;
        }
        case 'completeWorkflow':
          this.#record(write, activation, now, EventType.WorkflowCompleted, null, jsonObject({ result: c.result }));
          this.#finish(rs, write, effects, 'completed', c.result ?? null, null, now);
          break;
        case 'failWorkflow': {
          const failure = JSON.stringify(c.failure);
          this.#record(write, activation, now, EventType.WorkflowFailed, null, jsonObject({ failure }));
          this.#finish(rs, write, effects, 'failed', null, failure, now);
          break;
        }
      }
    }
  }

  /** Appends a history row to the step's write, with the next seq. */
  #record(
    write: WorkflowWrite,
    activation: number,
    at: number,
    type: string,
    commandId: number | null,
    payload: string | null,
  ): HistoryRow {
    const row = { seq: ++this.#seq, activation, type, commandId, payload, at };
    const history = write.history;
    // A step usually records two rows (an activity's end and the next one's start), and they
    // live until the flush commits: arrays of their own size, where push from empty reserves 17
    // slots that the young-generation collector would copy with them.
    if (history.length === 0) write.history = [row];
    else if (history.length === 1) write.history = [history[0]!, row];
    else history.push(row);
    return row;
  }

  #finish(
    rs: ReplayState,
    write: WorkflowWrite,
    effects: Effects,
    status: 'completed' | 'failed',
    result: string | null,
    error: string | null,
    now: number,
  ): void {
    this.#state = 'done';
    write.status = status;
    write.result = result;
    write.error = error;
    write.completedAt = now;
    write.isTerminal = true;
    // Whatever the workflow still awaited is abandoned with it, including timers started and
    // retries scheduled by this very step.
    const outstanding = rs.outstanding();
    for (const timer of outstanding.timers) {
      deleteTimer(write, timer.commandId);
      effects.disarmTimers = appended(effects.disarmTimers, timer.commandId);
    }
    for (const activity of outstanding.activities) {
      deleteTask(write, activity.commandId);
      effects.disarmRetries = appended(effects.disarmRetries, activity.commandId);
    }
    effects.dispatch = NO_ITEMS;
    effects.retries = NO_ITEMS;
    effects.armTimers = NO_ITEMS;
    effects.finished = { status, result, error, startedAt: this.#startedAt };
  }

  /**
   * The workflow's input, decoded. Encoded by duraflow at the start, it decodes unless it was
   * changed by hand: that is not the workflow's failure, nor changed code, but a row to repair, so
   * the actor fails (the engine rebuilds it after a growing pause) and nothing is stored.
   */
  #decodedInput(): unknown {
    try {
      return this.#host.codec.decode(this.#input);
    } catch (error) {
      throw this.#host.errors.unreadableInput(this.workflowId, error as Error);
    }
  }

  /** Whether this actor has taken every one of these events (null: more than could be listed). */
  #hasTaken(inboxIds: readonly number[] | null): boolean {
    if (inboxIds === null) return false;
    for (const id of inboxIds) if (!this.#consumedInbox?.has(id)) return false;
    return true;
  }

  /** Fails the step (and the actor, rebuilt after a pause) rather than taking an event it cannot read. */
  #decodedEvent(name: string, payload: string | undefined): unknown {
    try {
      return this.#host.codec.decode(payload);
    } catch (error) {
      throw this.#host.errors.unreadableEvent(this.workflowId, name, error as Error);
    }
  }

  /** Creates the replay state and calls the workflow function (its first synchronous part runs now). */
  #begin(startedAt: number, input: unknown): ReplayState {
    const host = this.#host;
    const rs = new ReplayState(this.workflowId, host.codec, host.errors);
    rs.now = startedAt;
    rs.isReplaying = this.#state === 'new';
    rs.onStray = (command) => this.#stray(rs, command);
    this.#replay = rs;
    const fn = host.workflow(this.#name);
    const ctx = new WorkflowContextImpl(rs, this.workflowId, this.#name, this.#version, startedAt);
    // The function is called inside a promise chain so that a synchronous throw becomes a failure.
    new Promise<unknown>((resolve) => resolve(fn!(ctx, input as never))).then(
      (result) => rs.complete(result),
      (error: unknown) => rs.fail(error),
    );
    return rs;
  }

  /** `onStored` runs once the write has committed (not when it was refused), before the release. */
  #enqueue(write: WorkflowWrite, effects: Effects, onStored?: () => void): void {
    const isEmpty =
      write.history.length === 0 &&
      !changesRow(write) &&
      write.tasksUpsert.length === 0 &&
      write.tasksDelete.length === 0 &&
      write.timersDelete.length === 0 &&
      write.inboxDelete.length === 0;
    if (isEmpty) return;
    this.#unflushed++;
    const creation = write.creates ? this.#creation : undefined;
    this.#host.wal.enqueue(write, (isRefused) => {
      this.#unflushed--;
      if (creation) this.#creation = undefined;
      if (isRefused) {
        // Someone else's workflow has this id: what this actor ran was never stored.
        const handed = this.#drop();
        creation?.onRefused(handed);
        return;
      }
      // Held messages are queued before the release, so a cache trim in it cannot evict this
      // actor with them; and they still go first if the release throws.
      if (creation) {
        const held = this.#takeHeld();
        // Closing: the messages' sources are stored, and the next start delivers them again.
        if (!this.#host.wal.isClosed) this.#mailbox.pushFirst(held);
        creation.onCreated();
      }
      onStored?.();
      this.#host.release(this.workflowId, effects);
    });
  }

  /** Loads the row and replays the history; `batch` is what the actor was handed meanwhile. */
  async #load(batch: readonly ActorMessage[]): Promise<boolean> {
    const host = this.#host;
    const started = performance.now();
    try {
      const row = this.#seed ?? (await host.loadWorkflow(this.workflowId));
      this.#seed = undefined;
      if (this.#state !== 'new') return false; // killed while loading
      if (!row || !host.workflow(row.name)) {
        this.#drop();
        return false;
      }
      this.#name = row.name;
      this.#version = row.version;
      this.#input = row.input;
      this.#parkedError = row.error;
      if (row.status === 'pending') {
        this.#state = 'unstarted';
        return true;
      }
      if (row.status !== 'running') {
        this.#state = 'done';
        return true;
      }
      const history = await host.loadHistory(this.workflowId);
      if (this.#state !== 'new') return false; // killed while loading
      await this.#replayHistory(history);
      host.observer.rehydrated(this.workflowId, history.length, (performance.now() - started) / 1000);
      const state = this.#state as ActorState;
      return state === 'live' || state === 'done';
    } catch (error) {
      this.#host.logger.error({ err: error, workflowId: this.workflowId }, 'loading workflow failed');
      this.#host.rebuild(this.workflowId, [...batch, ...this.#drop()]);
      return false;
    }
  }

  async #replayHistory(rows: StoredHistoryRow[]): Promise<void> {
    this.#seq = rows.at(-1)?.seq ?? 0;
    await replayHistory(rows, {
      workflowId: this.workflowId,
      errors: this.#host.errors,
      begin: (at) => {
        this.#startedAt = at;
        return this.#begin(at, this.#decodedInput());
      },
      consumed: (inboxId) => (this.#consumedInbox ??= new Set()).add(inboxId),
      isKilled: () => this.#state !== 'new',
      matched: (activation) => (this.#activation = activation),
      park: (activation, commandId, expected, got) => this.#park(activation, commandId, expected, got),
      replayed: (rs) => {
        const activities = rs.outstanding().activities;
        if (activities.length > 0) this.#mayBeRetried = new Set(activities.map((a) => a.commandId));
        this.#state = rs.isTerminal ? 'done' : 'live';
        if (this.#parkedError !== null) {
          // The code now matches its history again: the workflow leaves the parked state.
          this.#parkedError = null;
          this.#enqueue({ ...emptyWrite(this.workflowId, this.#name), error: null }, noEffects(this.#name));
        }
      },
    });
  }

  #park(activation: number, commandId: number | null, expected: string, got: string): void {
    const host = this.#host;
    const error = host.errors.nonDeterminism(this.workflowId, activation, commandId, expected, got);
    this.#state = 'parked';
    this.#replay = undefined;
    const failure = host.errors.toFailure(error);
    host.logger.error({ workflowId: this.workflowId, err: error }, 'workflow parked');
    // Brought back while still parked (an event, a timer, a restart, from another build whose
    // stack differs), it is not parked anew.
    if (!isSameParking(this.#parkedError, failure)) {
      this.#parkedError = JSON.stringify(failure);
      // Counted once stored: a parking whose write fails is parked again by the rebuild.
      this.#enqueue({ ...emptyWrite(this.workflowId, this.#name), error: this.#parkedError }, noEffects(this.#name), () =>
        host.observer.parked(this.workflowId, error),
      );
    }
  }

  /**
   * Workflow code emitted a command, or asked for a change (see StateChange), between steps, after
   * awaiting something that is not a ctx command (a plain timer, I/O): no step records it, and
   * replay, which runs no such thing, would not make it at the same point. The workflow is parked,
   * as for code that diverged from its history.
   */
  #stray(rs: ReplayState, call: StrayCall): void {
    // The code of a replaced run (a dropped actor's) may still be running: only the live one counts.
    if (this.#state !== 'live' || this.#replay !== rs) return;
    const identity = call.kind === 'stateChange' ? undefined : identityOf(call);
    this.#park(
      this.#activation + 1,
      identity?.commandId ?? null,
      'no command between steps (ctx called after awaiting something that is not a ctx command)',
      call.kind === 'stateChange' ? `${call.method}${call.name ? ` ${call.name}` : ''}` : describeIdentity(identity),
    );
  }

  /** `batch` is what the failed run was handling: its activity outcomes go to the rebuild too. */
  #crash(error: unknown, batch: readonly ActorMessage[]): void {
    this.#host.logger.error({ err: error, workflowId: this.workflowId }, 'actor failed; rebuilding it');
    const creation = this.#creation;
    this.#creation = undefined;
    const handed = this.#drop();
    if (creation) creation.onFailed(error, handed);
    else this.#host.rebuild(this.workflowId, [...batch, ...handed]);
  }

  #takeHeld(): ActorMessage[] {
    const held = this.#held;
    this.#held = [];
    return held;
  }

  /**
   * Stops the actor and forgets it; returns what it held and what was still queued for it, in
   * arrival order (for a refused creation, the stored workflow's messages).
   */
  #drop(): ActorMessage[] {
    this.#state = 'dropped';
    const handed = this.#takeHeld();
    for (const message of this.#mailbox.kill()) handed.push(message);
    this.#owner.dropped(this);
    return handed;
  }
}

function isStart(m: ActorMessage): boolean {
  return m.type === 'start';
}


