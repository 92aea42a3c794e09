import { Registry } from 'prom-client';

import type { ActorHost, ActorObserver, Effects, WorkflowErrors } from '../actors/actor-host.js';
import { ActorSystem } from '../actors/actor-system.js';
import type { ActorMessage } from '../actors/messages.js';
import type { WorkflowFunction } from '../actors/workflow-context.js';
import { registerQueueGauges } from '../metrics/collectors.js';
import { EngineMetrics } from '../metrics/engine-metrics.js';
import { type MetricsServer, startMetricsServer } from '../metrics/metrics-server.js';
import type { Logger } from '../storage/logger.js';
import { NO_ITEMS } from '../storage/lists.js';
import { type NewWorkflowRow, pendingRowOf, type StoredHistoryRow, type TaskRow, type WorkflowRow, type WorkflowWrite } from '../storage/rows.js';
import { type DeliverableEvent, inboxFor } from '../storage/sql/inbox.js';
import { LeaseLostError } from '../storage/sql/leases.js';
import { dueStarts, loadHistory, loadWorkflow } from '../storage/sql/workflows.js';
import { FlushOutcomeUnknownError, Wal, type WalObserver } from '../storage/wal.js';
import { ActivityAttempts } from './activity-attempts.js';
import type { ActivityOutcome } from './activity-context.js';
import type { ActivityPool } from './activity-pool.js';
import { type Client, handleFor } from './client.js';
import { closeWithDeadline } from './close-deadline.js';
import type { JsonCodec } from './codec.js';
import {
  ConfigurationError,
  EngineClosedError,
  InvalidArgumentError,
  UnknownWorkflowError,
  WorkflowAlreadyExistsError,
} from './errors.js';
import { coerceError } from './failure.js';
import { LeaseGates } from './lease-gates.js';
import { type LeaseChanges, LeaseKeeper } from './lease-keeper.js';
import type { ResolvedEngineOptions } from './options.js';
import { RebuildPauses } from './rebuild-pauses.js';
import { eventMessage, RECOVERY_BATCH, Recovery } from './recovery.js';
import { retryKey, startKey, timerKey, type TimerPayload } from './timer-payload.js';
import { type ArmedTimer, TimerService } from './timer-service.js';
import { UnstoredOutcomes } from './unstored-outcomes.js';
import { checkName } from './validate.js';
import { workflowErrors } from './workflow-errors.js';
import type { WorkflowState } from './workflow-state.js';
import {
  type LeaseState,
  Notice,
  type ResultOptions,
  type SendEventOptions,
  type StartWorkflowOptions,
  type WorkflowHandle,
  WorkflowStore,
} from './workflow-store.js';

/** The input type of a workflow function. */
export type WorkflowInput<F> = F extends (ctx: never, input: infer I) => unknown ? I : never;
/** The result type of a workflow function. */
export type WorkflowOutput<F> = F extends (...args: never[]) => Promise<infer O> ? O : never;
/** What follows the function in `startWorkflow`: the input may be left out where undefined is one. */
type StartArguments<F> = undefined extends WorkflowInput<F>
  ? [input?: WorkflowInput<F>, options?: StartWorkflowOptions]
  : [input: WorkflowInput<F>, options?: StartWorkflowOptions];

/** A running engine: everything a `Client` does, plus running the registered workflows. */
export interface Engine extends Omit<Client, 'startWorkflow'> {
  /** Starts a registered workflow, typed from its function. */
  startWorkflow<F extends WorkflowFunction<never, unknown>>(
    workflow: F,
    ...inputAndOptions: StartArguments<F>
  ): Promise<WorkflowHandle<WorkflowOutput<F>>>;
  /**
   * Starts a registered workflow by name. Resolves once the start is durably stored; rejects with
   * `UnknownWorkflowError` if this engine does not register the name, `WorkflowAlreadyExistsError`
   * if the id is taken.
   */
  startWorkflow<Output = unknown>(
    workflowName: string,
    input?: unknown,
    options?: StartWorkflowOptions,
  ): Promise<WorkflowHandle<Output>>;
  /**
   * Stops taking work, lets running steps commit, aborts running activities (they run again
   * wherever the workflow runs next: at-least-once), ends this engine's leases (an engine waiting
   * for its names takes them at once) and closes the database (not a PGlite instance passed in).
   * Waits for the database for `closeTimeoutMs` at most: past it, the database's connections are
   * dropped (what did not commit is left for the next engine to recover) and it resolves.
   */
  close(): Promise<void>;
  /** This engine's own prom-client registry (never the global one): serve it on your own route. */
  readonly metrics: Registry;
  /** Where the engine serves its metrics, when `options.metrics` asked it to; undefined once closed. */
  readonly metricsUrl: string | undefined;
}


/**
 * The engine: wires the store, the WAL, the actors, the activity pool and the timers, and
 * releases each step's side effects after its commit.
 *
 * Modes:
 * - running: actors step, effects are released after each commit, the poll and NOTIFY pick up
 *   starts and events from other processes.
 * - closing: nothing new is accepted; running steps finish and commit; activity outcomes that
 *   arrive are dropped (their tasks stay in the database and run again next time). Past
 *   `closeTimeoutMs`, the database is given up on (#abandon): what did not commit is left.
 * - closed: the database is released.
 *
 * And per workflow name, by its lease (LeaseKeeper):
 * - held and fresh: its workflows run here and their side effects are released;
 * - held and overdue: they still run, but their side effects are held back until a renewal;
 * - not held: nothing of it runs here; its starts are stored for the holder, and polls skip it.
 */
export class EngineImpl implements Engine, ActorHost {
  readonly #options: ResolvedEngineOptions;
  readonly #store: WorkflowStore;
  readonly #pool: ActivityPool<TaskRow>;
  readonly wal: Wal;
  readonly #system: ActorSystem;
  readonly #timers: TimerService<TimerPayload>;
  /** The names each workflow function is registered under (one, unless aliased). */
  readonly #namesByFunction = new Map<WorkflowFunction<never, unknown>, string[]>();
  readonly #leases: LeaseKeeper;
  readonly #gates: LeaseGates;
  readonly #recovery: Recovery;
  /** True until the first claim returns: names it gains are recovered by `recoverAll` (awaited), not by #onLeaseChange. */
  #isStarting = true;
  /** Starts made together with their first step, not yet committed: each row, and how to settle its call. */
  readonly #creations = new Map<string, { row: NewWorkflowRow; settle: (error?: Error) => void }>();
  readonly #inboxToRead = new Set<string>();
  /** Failed actors, rebuilt at once or after a pause that grows while they fail again. */
  readonly #rebuilds = new RebuildPauses((workflowId) => {
    if (!this.#isClosing) this.#recoverWorkflows([workflowId]);
  });
  /** Outcomes of attempts that no actor stored, each kept for its workflow's rebuild. */
  readonly #unstoredOutcomes = new UnstoredOutcomes();
  readonly #attempts: ActivityAttempts;
  readonly #poll: NodeJS.Timeout;
  #pollRunning: Promise<void> | undefined;
  #pollAgain = false;
  #closing: Promise<void> | undefined;
  /** Set the moment close() is called, before anything it does can call back into the engine. */
  #isClosing = false;
  readonly errors: WorkflowErrors = workflowErrors;
  readonly metrics = new Registry();
  metricsUrl: string | undefined;
  #metricsServer: MetricsServer | undefined;
  readonly #m: EngineMetrics;
  readonly observer: ActorObserver;

  constructor(
    options: ResolvedEngineOptions,
    store: WorkflowStore,
    createPool: (
      onOutcome: (task: TaskRow, outcome: ActivityOutcome | undefined, workflowName: string) => void,
    ) => ActivityPool<TaskRow>,
  ) {
    this.#options = options;
    this.#store = store;
    this.#pool = createPool((task, outcome, workflowName) => this.#onOutcome(task, outcome, workflowName));
    const m = new EngineMetrics(this.metrics);
    this.#m = m;
    this.#attempts = new ActivityAttempts(this.#pool, options.retry, m);
    this.observer = {
      parked: () => m.parked(),
      rehydrated: (_id, _events, seconds) => m.rehydrated(seconds),
      evicted: () => m.evicted(),
    };
    const walObserver: WalObserver = {
      flushed: ({ events, seconds }) => m.flushed(events, seconds),
      flushFailed: () => m.flushFailed(),
      callbackFailed: (error) => this.logger.error({ err: error }, 'releasing a committed step failed'),
      cleanupFailed: (error) => this.logger.warn({ err: error }, 'deleting expired flush tokens and events failed; will retry'),
    };
    for (const [name, fn] of options.workflows) {
      const names = this.#namesByFunction.get(fn);
      if (names) names.push(name);
      else this.#namesByFunction.set(fn, [name]);
    }
    this.#leases = new LeaseKeeper({
      sql: store.sql,
      tables: store.tables,
      names: [...options.workflows.keys()],
      ttlMs: options.leaseTtlMs,
      isExclusive: store.isExclusive,
      logger: options.logger,
      onChange: (changes) => this.#onLeaseChange(changes),
    });
    const leases = this.#leases;
    this.wal = new Wal({
      sql: store.sql,
      tables: store.tables,
      // The embedded database in dataDir has no other engine to fence off.
      lease: store.isExclusive ? undefined : { owner: leases.owner, epochOf: (name) => leases.epochOf(name) },
      highWaterEvents: options.walHighWaterEvents,
      onFlushFailed: (ids, error, discarded) => this.#onFlushFailed(ids, error, discarded),
      observer: walObserver,
    });
    this.#system = new ActorSystem(this, options.maxCachedWorkflows);
    this.#recovery = new Recovery({
      sql: store.sql,
      tables: store.tables,
      leases,
      logger: options.logger,
      pollIntervalMs: options.pollIntervalMs,
      unstoredOutcomes: this.#unstoredOutcomes,
      isClosing: () => this.#isClosing,
      target: {
        handleStarts: (rows, now) => this.#handleStarts(rows, now),
        deliver: (workflowId, message) => this.#deliver(workflowId, message),
        deliverWhenRoom: (workflowId, message) => this.#deliverWhenRoom(workflowId, message),
        dispatch: (workflowName, task) => this.#gates.dispatch(workflowName, task),
        arm: (key, dueAt, payload) => this.#gates.arm(key, dueAt, payload),
        fire: (key, dueAt, payload) => {
          this.#gates.disarm(key);
          this.#onTimer({ key, dueAt, payload });
        },
        rebuild: (workflowId) => this.rebuild(workflowId),
        requestPoll: () => this.#requestPoll(),
      },
    });
    this.#timers = new TimerService(
      (timer) => this.#onTimer(timer),
      (error) => this.logger.error({ err: error }, 'firing a timer failed'),
    );
    this.#gates = new LeaseGates(this.#leases, this.#timers, this.#attempts, (p) => this.#fire(p), options.logger);
    registerQueueGauges(this.metrics, {
      walPendingEvents: () => this.wal.pendingEvents,
      walFlushesInFlight: () => this.wal.flushesInFlight,
      mailboxMessages: () => this.#system.queuedMessages,
      actorsInMemory: () => this.#system.size,
      activityTasksQueued: () => this.#pool.queued,
      activityTasksRunning: () => this.#pool.running,
      timersArmed: () => this.#timers.size,
      timersOverdue: () => this.#timers.overdue(Date.now()),
      workflowsPending: () => this.#timers.count((p) => p.kind === 'start'),
      workflowsWaitingForRoom: () => this.#system.waitingWorkflows,
      resultWaiters: () => this.#store.waiters.size,
      leasesHeld: () => this.#leases.held.length,
      effectsHeldBack: () => this.#gates.heldBack,
    });
    this.#poll = setInterval(() => {
      // An actor that has had its turn in memory counts as parked from then on: no commit or
      // exit announces that, so waiting workflows look for room on the poll's beat too.
      this.#system.admitWaiting();
      this.#requestPoll();
    }, options.pollIntervalMs);
    store.onNotice((payload) => {
      if (payload === Notice.Lease) void this.#leases.claim();
      else if (payload !== Notice.Done) this.#requestPoll();
    });
  }

  // --- ActorHost ---

  loadWorkflow(workflowId: string): Promise<WorkflowRow | undefined> {
    return loadWorkflow(this.#store.sql, this.#store.tables, workflowId);
  }

  loadHistory(workflowId: string): Promise<StoredHistoryRow[]> {
    return loadHistory(this.#store.sql, this.#store.tables, workflowId);
  }

  get codec(): JsonCodec {
    return this.#store.codec;
  }

  get logger(): Logger {
    return this.#options.logger;
  }

  /** The workflow function of `name` if this engine runs it now: it registers it and holds its lease. */
  workflow(name: string): WorkflowFunction | undefined {
    return this.#leases.holds(name) ? (this.#options.workflows.get(name) as WorkflowFunction | undefined) : undefined;
  }

  release(workflowId: string, effects: Effects): void {
    const m = this.#m;
    if (effects.receivedAt !== undefined) {
      m.stepCommitted(effects.workflowName, (performance.now() - effects.receivedAt) / 1000);
    }
    if (effects.isStarted) m.workflowStarted(effects.workflowName);
    if (effects.finished) {
      const { status, startedAt } = effects.finished;
      m.workflowFinished(effects.workflowName, status, Math.max(0, Date.now() - startedAt) / 1000);
      // Stored, the end is the caller's even if the step committed while the engine closes.
      this.#store.waiters.settle(workflowId, effects.finished);
    }
    // Stored, a retry runs here or, if this engine is closing, on the next one.
    for (const task of effects.retries) m.activityRetried(task.name);
    // Stored, the failure is its workflow's: one that ended before the attempt did takes none.
    for (const { activityName, failure } of effects.failures) this.#attempts.failureStored(activityName, failure);
    // Closing: what the step starts (activities, timers) is stored, for the next engine to run.
    if (this.#isClosing) return;
    this.#rebuilds.stepCommitted(workflowId);
    const { workflowName } = effects;
    for (const task of effects.dispatch) this.#gates.dispatch(workflowName, task);
    for (const task of effects.retries) {
      this.#gates.arm(retryKey(workflowId, task.commandId), task.visibleAt, { kind: 'retry', workflowName, task });
    }
    for (const timer of effects.armTimers) {
      this.#gates.arm(timerKey(workflowId, timer.commandId), timer.dueAt, { kind: 'timer', workflowId, workflowName, commandId: timer.commandId });
    }
    for (const commandId of effects.disarmTimers) this.#gates.disarm(timerKey(workflowId, commandId));
    for (const commandId of effects.disarmRetries) this.#gates.disarm(retryKey(workflowId, commandId));
    // Actors become evictable once their writes commit: trim the cache here, not only on delivery.
    if (this.#system.size > this.#options.maxCachedWorkflows) this.#system.trim();
    this.#system.stepCommitted(workflowId);
    if (effects.finished) this.#system.release(workflowId);
  }

  /** Re-delivers what the database says is unfinished for these workflows. */
  #recoverWorkflows(workflowIds: string[]): void {
    void this.#recovery.recoverWithRetry({ workflowIds });
  }

  rebuild(workflowId: string, unprocessed: readonly ActorMessage[] = NO_ITEMS): void {
    // Closing: a pause timer now would keep the process alive up to a minute for nothing.
    if (this.#isClosing) return;
    this.#unstoredOutcomes.keepAll(workflowId, unprocessed);
    this.#rebuilds.failed(workflowId);
  }

  // --- public API ---

  async startWorkflow<Output>(
    workflow: string | WorkflowFunction<never, unknown>,
    input?: unknown,
    options?: StartWorkflowOptions,
  ): Promise<WorkflowHandle<Output>> {
    this.#checkOpen();
    const name = typeof workflow === 'function' ? this.#nameOf(workflow) : checkName(workflow, 'workflow name');
    if (name === undefined || !this.#options.workflows.has(name)) {
      throw new UnknownWorkflowError(typeof workflow === 'function' ? workflow.name || '<anonymous>' : workflow);
    }
    const row = this.#store.prepareStart(name, input, options);
    const isImmediate = row.startAt <= Date.now();
    const isHeld = this.#leases.holds(name);
    if (isHeld && isImmediate && !this.#system.get(row.id) && this.#system.makeRoomForStart()) {
      await this.#createWithFirstStep(row);
      return handleFor<Output>(this, row.id);
    }
    // Stored first, then started: now, or once the actors in memory leave room for it.
    const isStored = await this.wal.enqueueStart(row).catch((error: unknown) => {
      throw this.#startFailure(error);
    });
    if (!isStored) throw new WorkflowAlreadyExistsError(row.id);
    if (!isHeld) {
      // Not this engine's name now: whoever holds it (now or later) runs the start.
      await this.#store.notifyEngines(Notice.Start);
    } else if (isImmediate) {
      this.#deliverWhenRoom(row.id, { type: 'start' }, pendingRowOf(row));
    } else {
      this.#gates.arm(startKey(row.id), row.startAt, { kind: 'start', workflowId: row.id, workflowName: name });
    }
    return handleFor<Output>(this, row.id);
  }

  /** The name a workflow function is registered under; one registered under several is refused. */
  #nameOf(workflow: WorkflowFunction<never, unknown>): string | undefined {
    const names = this.#namesByFunction.get(workflow);
    if (names && names.length > 1) {
      throw new InvalidArgumentError(
        `workflow function ${workflow.name || '<anonymous>'} is registered under several names (${names.map((n) => JSON.stringify(n)).join(', ')}): start it by name`,
      );
    }
    return names?.[0];
  }

  async sendEvent(workflowId: string, eventName: string, payload?: unknown, options?: SendEventOptions): Promise<void> {
    this.#checkOpen();
    const stored = await this.#store.storeEvent(workflowId, eventName, payload, options);
    // A duplicate was delivered (or will be, by the poll) when it was first stored.
    if ('isDuplicate' in stored) return;
    if (this.#leases.holds(stored.workflowName)) {
      // Events stored before it (sent from another process, the poll not there yet) go first.
      const event: ActorMessage = {
        type: 'event',
        inboxId: stored.inboxId,
        name: eventName,
        payload: stored.payload,
        unconsumedBefore: stored.unconsumedBefore,
      };
      // Held while a recovery under way covers the workflow (see Recovery.holdEvent). Else
      // delivered; stored: if the engine began closing meanwhile, its next start delivers it.
      if (!this.#recovery.holdEvent(workflowId, stored.workflowName, event)) this.#deliver(workflowId, event);
    } else {
      await this.#store.notifyEngines(Notice.Event);
    }
  }

  async inspect(workflowId: string): Promise<WorkflowState> {
    this.#checkOpen();
    return this.#store.inspect(
      workflowId,
      () => this.#system.get(workflowId)?.snapshot(),
      (name) => this.#leases.holds(name),
    );
  }

  async result<Output>(workflowId: string, options?: ResultOptions): Promise<Output> {
    this.#checkOpen();
    // A workflow running in this engine's memory, or started here and waiting for room, settles
    // its waiters when its end commits: no need to ask the database first.
    return this.#store.result<Output>(workflowId, options, this.#system.isRunningHere(workflowId));
  }

  async leases(): Promise<LeaseState[]> {
    this.#checkOpen();
    return this.#store.leases();
  }

  close(): Promise<void> {
    this.#isClosing = true;
    this.#recovery.closeCalled();
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  // --- internals ---

  /**
   * Claims the leases of the registered names, then re-delivers everything the database says is
   * unfinished for the names claimed. Names another engine holds are taken over later, when its
   * lease ends.
   */
  async recoverAll(): Promise<void> {
    await this.#leases.start();
    this.#isStarting = false;
    await this.#recovery.recoverHeld();
  }

  /** Starts the `/metrics` server if the options asked for one. */
  async serveMetrics(): Promise<void> {
    const config = this.#options.metrics;
    if (!config) return;
    try {
      this.#metricsServer = await startMetricsServer(this.metrics, config.port, config.host);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new ConfigurationError(`the metrics server cannot listen on ${config.host}:${config.port}: ${reason}`, { cause: error });
    }
    this.metricsUrl = this.#metricsServer.url;
  }

  async #shutdown(): Promise<void> {
    // Each step below waits for the database, which may not answer at all (a statement hangs for
    // 30 s before it is retried, and a flush or a lease release is tried again): past the
    // deadline, the engine gives up on it (see #abandon), and the steps end at once.
    await closeWithDeadline(this.#options.closeTimeoutMs, () => this.#closeSteps(), () => this.#abandon());
  }

  /**
   * close() ran out of time: the WAL stops trying and the database connections are dropped, so
   * every statement under way, and any after, fails at once. Nothing that committed is lost; the
   * steps that did not commit are the next engine's to recover, as after a crash.
   */
  #abandon(): void {
    this.logger.warn(
      { closeTimeoutMs: this.#options.closeTimeoutMs, flushesInFlight: this.wal.flushesInFlight, pendingEvents: this.wal.pendingEvents },
      'the database did not let close() finish in time; dropping its connections (what did not commit is recovered by the next engine)',
    );
    this.wal.abandon();
    this.#store.sql.abort();
  }

  async #closeSteps(): Promise<void> {
    clearInterval(this.#poll);
    // The WAL is closed only once the actors have run what they hold, which they could not do
    // while waiting for room behind a flush that retries until the database is back.
    this.wal.endBackpressure();
    this.#rebuilds.close();
    const closed = new EngineClosedError();
    this.#timers.close();
    const errors: unknown[] = [];
    const step = async (work: () => Promise<void> | void): Promise<void> => {
      try {
        await work();
      } catch (error) {
        errors.push(error);
      }
    };
    await step(() => this.#pool.close());
    this.#system.admitResultsForClose();
    await step(() => this.#system.drain());
    await step(() => this.wal.close());
    await step(() => this.#pollRunning);
    // A recovery that ran on beside the polls must not find the store closed under it.
    await step(async () => {
      await this.#recovery.settled();
    });
    // After the last flush: an engine waiting for these names takes them now, not at expiry.
    await step(async () => {
      if (await this.#leases.close()) await this.#store.notifyEngines(Notice.Lease);
    });
    this.#system.close();
    // Creations whose first step never reached the database (it was refused, closing).
    for (const { settle } of [...this.#creations.values()]) settle(closed);
    await step(() => this.#metricsServer?.close());
    this.metricsUrl = undefined;
    await step(() => this.#store.close());
    if (errors.length > 0) throw new AggregateError(errors, 'closing the engine failed');
  }

  #checkOpen(): void {
    if (this.#isClosing) throw new EngineClosedError();
  }

  /**
   * Starts a workflow by running its first step at once and committing the new row together
   * with that step (one commit instead of two); resolves once both are durable. If the id turns
   * out to be taken, nothing is stored and the call rejects.
   */
  #createWithFirstStep(row: NewWorkflowRow): Promise<void> {
    return new Promise((resolve, reject) => {
      const creation = {
        row,
        settle: (error?: Error): void => {
          if (this.#creations.get(row.id) === creation) this.#creations.delete(row.id);
          if (error) reject(error);
          else resolve();
        },
      };
      const { settle } = creation;
      this.#creations.set(row.id, creation);
      this.#system.deliver(row.id, { type: 'start' }, pendingRowOf(row), {
        row,
        onCreated: () => settle(),
        onRefused: (held) => {
          settle(new WorkflowAlreadyExistsError(row.id));
          // What reached the refused actor (a start that won the race, an activity result, an
          // event) belongs to the stored workflow of this id: a fresh actor loads it and takes them.
          for (const message of held) this.#deliver(row.id, message);
        },
        onFailed: (error, held) => {
          settle(coerceError(error));
          for (const message of held) this.#deliver(row.id, message);
        },
      });
    });
  }

  #deliver(workflowId: string, message: ActorMessage, seed?: WorkflowRow): void {
    if (this.#isClosing) return;
    if (this.#rebuilds.isPaused(workflowId)) this.#unstoredOutcomes.keep(workflowId, message);
    else this.#system.deliver(workflowId, message, seed);
  }

  /** Starts, and activity outcomes (after a recovery, many for workflows not in memory). */
  #deliverWhenRoom(workflowId: string, message: ActorMessage, seed?: WorkflowRow): void {
    if (this.#isClosing) return;
    if (this.#rebuilds.isPaused(workflowId)) this.#unstoredOutcomes.keep(workflowId, message);
    else this.#system.deliverWhenRoom(workflowId, message, seed);
  }

  /**
   * What the pool reports for each attempt: complete it, retry it, or fail it for good. None for
   * an attempt abandoned when another engine took over the name: that engine runs it again.
   */
  #onOutcome(task: TaskRow, outcome: ActivityOutcome | undefined, workflowName: string): void {
    this.#attempts.ended(task);
    if (this.#isClosing) return;
    if (outcome === undefined) {
      // Taken back while the abandoned attempt ran on: the recovery then could not run the task
      // (it was still in flight), so it runs now.
      if (this.#leases.holds(workflowName)) this.#recoverWorkflows([task.workflowId]);
      return;
    }
    this.#deliverWhenRoom(task.workflowId, this.#attempts.messageFor(task, outcome));
  }

  #onTimer(timer: ArmedTimer<TimerPayload>): void {
    const p = timer.payload;
    this.#m.timerFired(Math.max(0, Date.now() - timer.dueAt) / 1000);
    this.#gates.fire(timer.key, p);
  }

  #fire(p: TimerPayload): void {
    switch (p.kind) {
      case 'timer':
        this.#deliver(p.workflowId, { type: 'timerFired', commandId: p.commandId });
        break;
      case 'retry':
        this.#attempts.start(p.workflowName, p.task);
        break;
      case 'start':
        this.#deliverWhenRoom(p.workflowId, { type: 'start' });
        this.readInbox(p.workflowId);
        break;
    }
  }

  /**
   * What a start whose flush failed rejects with. Closing gives a flush few tries: then the start
   * ends with the engine, whatever the database said (its error is the cause).
   */
  #startFailure(error: unknown): Error {
    return this.#isClosing ? new EngineClosedError({ cause: error }) : coerceError(error);
  }

  #onFlushFailed(workflowIds: ReadonlySet<string>, error: unknown, discarded: ReadonlyMap<string, readonly WorkflowWrite[]>): void {
    const isLeaseLost = error instanceof LeaseLostError;
    const isOutcomeUnknown = error instanceof FlushOutcomeUnknownError;
    if (isLeaseLost) {
      this.logger.warn({ workflows: workflowIds.size }, 'a flush wrote workflows whose lease this engine lost; rebuilding those it still holds');
    } else if (isOutcomeUnknown) {
      this.logger.warn({ err: error, workflows: workflowIds.size }, 'a flush whose answer was lost may or may not have committed; rebuilding its workflows from the database');
    } else {
      this.logger.error({ err: error, workflows: workflowIds.size }, 'WAL flush failed; rebuilding the workflows in it');
    }
    // What the database may lack of them (activity outcomes, a retry and its backoff among them)
    // goes to their rebuild, or the attempts it ended would run again.
    const handed = this.#system.dropUncommitted(workflowIds, discarded);
    // A workflow whose creation failed with the flush does not exist: its start call fails, or,
    // when only the lease was lost, is stored as a plain start for the engine that holds it. One
    // whose flush's outcome is unknown is stored so too: its token makes the store find the row
    // if the flush did commit.
    const failure = this.#startFailure(error);
    for (const id of workflowIds) {
      const creation = this.#creations.get(id);
      if (!creation) continue;
      if ((isLeaseLost || isOutcomeUnknown) && !this.#isClosing) this.#storeForHolder(creation.row, creation.settle);
      else creation.settle(failure);
    }
    // Which names are gone is known once a claim has asked: rebuild only what is still held. A
    // batch that failed otherwise is rebuilt as any failed actor is, with backoff if it fails again.
    if (isLeaseLost) {
      // Kept for the recovery after the claim, which takes them (and drops those of names lost).
      if (!this.#isClosing) for (const [id, messages] of handed) this.#unstoredOutcomes.keepAll(id, messages);
      void this.#leases.claim().then(() => this.#recoverWorkflows([...workflowIds]));
    } else {
      for (const id of workflowIds) this.rebuild(id, handed.get(id));
    }
  }

  /** Stores a start whose first step could not be committed here, for the name's holder to run. */
  #storeForHolder(row: NewWorkflowRow, settle: (error?: Error) => void): void {
    this.wal.enqueueStart(row).then(
      (isStored) => {
        if (!isStored) {
          settle(new WorkflowAlreadyExistsError(row.id));
          return;
        }
        settle();
        void this.#store.notifyEngines(Notice.Start);
      },
      (error: unknown) => settle(this.#startFailure(error)),
    );
  }

  /**
   * After each claim that got through: a lost name's workflows stop here at once (their actors,
   * timers and held-back effects go; what they had not flushed is fenced off anyway; their
   * activities still running report to no one); a gained name's unfinished work is recovered, as
   * at a start; and what was held back while a lease was overdue is released now that it is not.
   */
  #onLeaseChange({ gained, lost }: LeaseChanges): void {
    if (lost.length > 0) this.#stopRunning(new Set(lost));
    if (gained.length > 0) {
      this.logger.info({ names: gained, owner: this.#leases.owner }, 'holding the leases of these workflow names');
      if (!this.#isStarting) void this.#recovery.recoverWithRetry({ names: gained });
    }
    if (this.#gates.heldBack > 0) this.#gates.releaseHeldBack();
  }

  #stopRunning(lost: ReadonlySet<string>): void {
    this.logger.warn({ names: [...lost] }, 'another engine took over the leases of these workflow names; stopped running them');
    this.#gates.dropHeldBack(lost);
    this.#pool.abandon(lost);
    this.#system.dropNamed(lost);
    // Their ends will be announced by another engine: all callers waiting here read them from the database.
    this.#store.watchWaitersFromElsewhere();
    this.#timers.disarmWhere((p) => lost.has(p.workflowName));
    // A creation's first step cannot commit now (if it was written, its flush fails and comes
    // here too; the start's token makes the second store find the first): store it for the holder.
    for (const { row, settle } of [...this.#creations.values()]) if (lost.has(row.name)) this.#storeForHolder(row, settle);
  }

  #handleStarts(rows: WorkflowRow[], now: number): void {
    for (const row of rows) {
      const dueAt = row.start_at.getTime();
      // No seed: a poll's rows may be stale (the workflow started, ran and left memory since the
      // query began), and a stale 'pending' seed would start it a second time. A fresh actor
      // reads the row; one in memory ignores a start it is past.
      const payload: TimerPayload = { kind: 'start', workflowId: row.id, workflowName: row.name };
      if (dueAt > now) {
        this.#gates.arm(startKey(row.id), dueAt, payload);
        continue;
      }
      // A due start held back is a fired start timer: one per workflow however many polls find it.
      // Released now, it skips a fired timer's inbox read (#fire): the poll reads the inbox next.
      const gate = this.#leases.gate(row.name);
      if (gate === 'release') this.#deliverWhenRoom(row.id, { type: 'start' });
      else if (gate === 'holdBack') this.#gates.holdBackFired(startKey(row.id), payload);
    }
  }

  /**
   * Events sent before a start waited in the inbox (a delayed start's out of the polls' sight
   * until now): the workflows that ask in one turn read theirs with one query.
   */
  readInbox(workflowId: string): void {
    const isScheduled = this.#inboxToRead.size > 0;
    this.#inboxToRead.add(workflowId);
    if (isScheduled) return;
    setImmediate(() => {
      const ids = [...this.#inboxToRead];
      this.#inboxToRead.clear();
      if (this.#isClosing) return;
      this.#pollInbox(this.#leases.held, ids).catch((error: unknown) => this.logger.warn({ err: error }, 'reading the inbox failed'));
    });
  }

  async #pollInbox(names: string[], workflowIds?: string[]): Promise<void> {
    if (names.length === 0) return;
    const read = this.#recovery.namesToRead(names);
    if (read.length === 0) return;
    const events = await inboxFor(this.#store.sql, this.#store.tables, read, workflowIds);
    // A recovery fires the timers that came due in time order with the events it reads: the
    // events of its workflows delivered before it has would overtake those timers, however late
    // they were sent. They stay in the inbox for it, or for the poll after it.
    let left = 0;
    for (const e of events) {
      if (this.#recovery.covers(e.workflowName, e.workflowId)) left++;
      else this.#deliverEvent(e);
    }
    if (left > 0) this.#recovery.leftEvents(left);
  }

  #deliverEvent(e: DeliverableEvent): void {
    this.#deliver(e.workflowId, eventMessage(e));
  }

  /** Coalesces poll requests (timer, NOTIFY) so at most one poll runs and one waits. */
  #requestPoll(): void {
    if (this.#isClosing) return;
    if (this.#pollRunning) {
      this.#pollAgain = true;
      return;
    }
    this.#pollRunning = this.#pollOnce().finally(() => {
      this.#pollRunning = undefined;
      if (this.#pollAgain) {
        this.#pollAgain = false;
        this.#requestPoll();
      }
    });
  }

  async #pollOnce(): Promise<void> {
    try {
      const names = this.#leases.held;
      if (names.length === 0) return;
      const now = Date.now();
      const starts = await dueStarts(this.#store.sql, this.#store.tables, names, now + this.#options.pollIntervalMs * 2, RECOVERY_BATCH);
      if (this.#isClosing) return;
      this.#handleStarts(starts, now);
      await this.#pollInbox(names);
    } catch (error) {
      this.logger.warn({ err: error }, 'polling for starts and events failed');
    }
  }
}
