import { randomUUID } from 'node:crypto';

import type { SerializedFailure } from '../actors/history.js';
import type { ActorSnapshot } from '../actors/workflow-actor.js';
import type { Logger } from '../storage/logger.js';
import { ForeignSchemaError, MigrationLockError, type MigrationState, migrate, migrationState } from '../storage/migrate.js';
import { DriverAbortedError, PgDriver } from '../storage/pg-driver.js';
import { DataDirectoryInUseError } from '../storage/data-dir-lock.js';
import { NoEmbeddedDatabaseError, PgliteDriver } from '../storage/pglite-driver.js';
import type { NewWorkflowRow } from '../storage/rows.js';
import { inboxOf, insertEvent } from '../storage/sql/inbox.js';
import { flushBatch } from '../storage/sql/flush-batch.js';
import { readLeases } from '../storage/sql/leases.js';
import { tasksOf } from '../storage/sql/tasks.js';
import { finishedAmong, loadHistory, loadWorkflow, notify, timersOf } from '../storage/sql/workflows.js';
import { type Sql, type Tables, tablesFor } from '../storage/sql.js';
import { pause, retryDelayMs } from '../storage/backoff.js';
import { isRetryable } from '../storage/pg-errors.js';
import { JsonCodec } from './codec.js';
import {
  ConfigurationError,
  DatabaseUnavailableError,
  EngineClosedError,
  EngineError,
  EventIdReusedError,
  InvalidArgumentError,
  WorkflowClosedError,
  WorkflowFailedError,
  WorkflowNotFoundError,
} from './errors.js';
import { fromFailure } from './failure.js';
import type { ResolvedConnection } from './options.js';
import { readStored, readStoredObject } from './read-stored.js';
import { type Outcome, resultTimeout, ResultWaiters } from './result-waiters.js';
import { checkEpochMs, checkKnownKeys, checkName } from './validate.js';
import { buildWorkflowState, type WorkflowState } from './workflow-state.js';

/** Options of `startWorkflow`. */
export interface StartWorkflowOptions {
  /** The workflow's id, unique in the database. @default a random UUID */
  workflowId?: string | undefined;
  /** Version label stored with the workflow (shown by inspect). @default '1' */
  version?: string | undefined;
  /** Start no earlier than this; until then the workflow is `pending`. @default now */
  startAt?: Date | number | undefined;
}

/** Options of `sendEvent`. */
export interface SendEventOptions {
  /**
   * Identifies the event within its workflow: sending the same id again (a retry after an error)
   * stores it once, and succeeds even if the first send has since ended the workflow, for an hour
   * after the event was consumed. @default a random UUID per call
   */
  eventId?: string | undefined;
}

/** Options of `result()`. */
export interface ResultOptions {
  /** Give up after this many milliseconds with a `TimeoutError`. @default wait forever */
  timeoutMs?: number | undefined;
}

/** A started workflow. */
export interface WorkflowHandle<Output = unknown> {
  readonly workflowId: string;
  /** Resolves with the workflow's result; rejects with `WorkflowFailedError` if its code threw. */
  result(options?: ResultOptions): Promise<Output>;
}

/** Which engine runs the workflows of a name (see `Client.leases`). */
export interface LeaseState {
  /** The workflow name leased. */
  workflowName: string;
  /** The holding engine: `host:pid:` and 8 random hex digits, new at each start of an engine. */
  owner: string;
  /** Raised each time the name changes hands. */
  epoch: number;
  /** When the lease ends unless renewed (every third of `leaseTtlMs`). */
  expiresAt: Date;
  /**
   * Past `expiresAt` by the database's clock: the holder closed, crashed, stalled or cannot reach
   * the database, and the next claim by an engine registering the name takes it (the holder's own,
   * if it comes first).
   */
  isExpired: boolean;
}

/** NOTIFY payloads on the schema's channel. */
export const Notice = { Start: 'start', Event: 'event', Done: 'done', Lease: 'lease' } as const;

async function openSql(connection: ResolvedConnection, tables: Tables, isMigrating: boolean): Promise<Sql> {
  const { database, logger } = connection;
  if (typeof database === 'string') {
    return new PgDriver({
      connectionString: database,
      maxConnections: connection.maxConnections,
      onError: (error) => logger.warn({ err: error }, 'database connection error'),
    });
  }
  if (database) return PgliteDriver.wrap(database);
  try {
    // A new directory counts as holding a database only once it is migrated too.
    const prepare = isMigrating ? (sql: Sql) => migrate(sql, tables, connection.databaseRetryMs) : undefined;
    return await PgliteDriver.open(connection.dataDir, { mustExist: !isMigrating, prepare });
  } catch (error) {
    if (error instanceof DataDirectoryInUseError) throw new ConfigurationError(error.message, { cause: error });
    if (error instanceof NoEmbeddedDatabaseError) {
      throw new ConfigurationError(`${error.message} (and none is created when migrate is false)`, { cause: error });
    }
    // A path that is a file, or a directory another program (or an older version's first start
    // killed midway) left without a whole database: PGlite's own error (a TypeError, say) would
    // read as bad options.
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigurationError(`the embedded database in ${JSON.stringify(connection.dataDir)} cannot be opened: ${reason}`, {
      cause: error,
    });
  }
}

/**
 * What opening the database rejects with: unreachable, or migrations kept waiting for a lock, is
 * `DatabaseUnavailableError` (try again later); refused (a wrong password, a database or
 * permission that is missing) is `ConfigurationError`. Either keeps the driver's error as its cause.
 */
function openFailure(error: unknown): Error {
  if (error instanceof EngineError) return error;
  if (error instanceof ForeignSchemaError) return new ConfigurationError(error.message, { cause: error });
  // Another session is in the way, not the database: retrying later is the remedy all the same.
  if (error instanceof MigrationLockError) {
    return new DatabaseUnavailableError('opening the database', error, error.message);
  }
  if (isRetryable(error)) return new DatabaseUnavailableError('opening the database', error);
  const message = error instanceof Error ? error.message : String(error);
  return new ConfigurationError(`the database refused to be opened: ${message}`, { cause: error });
}

/** Refuses a schema that lacks this version's tables, naming what it found; returns where it is. */
async function checkMigrated(sql: Sql, tables: Tables, lockWaitMs: number): Promise<MigrationState> {
  const { applied, newest } = await migrationState(sql, tables, lockWaitMs);
  if (applied === undefined) {
    throw new ConfigurationError(`schema "${tables.schema}" holds no duraflow tables (and none are created when migrate is false)`);
  }
  if (applied < newest) {
    throw new ConfigurationError(
      `schema "${tables.schema}" is at migration ${applied} and this version needs ${newest}: open an engine or a client with migrate on to upgrade it`,
    );
  }
  return { applied, newest };
}

/**
 * What the engine and the client share: the database, the data conversion, reading state, and
 * waiting for results. Starting a workflow or sending an event here writes straight to the
 * database and notifies; the engine overrides both with its in-process paths.
 */
export class WorkflowStore {
  readonly sql: Sql;
  readonly tables: Tables;
  readonly codec: JsonCodec;
  readonly logger: Logger;
  /**
   * The database is the embedded one in `dataDir`, which its lock file gives to this process
   * alone. (A PGlite instance passed in may be shared by engines in the process.)
   */
  readonly isExclusive: boolean;
  readonly waiters = new ResultWaiters();
  #unlisten: (() => Promise<void>) | undefined;
  #onNotice: ((payload: string) => void) | undefined;
  #isClosed = false;
  #closed: Promise<void> | undefined;
  /** The last result check queued; the next one starts after it. */
  #lastCheck: Promise<void> = Promise.resolve();
  /** A queued check not started yet, which later calls share. */
  #nextCheck: Promise<void> | undefined;
  /** The next try of a check that failed. */
  #recheck: NodeJS.Timeout | undefined;
  readonly #retryMs: number;

  private constructor(sql: Sql, tables: Tables, connection: ResolvedConnection) {
    this.isExclusive = connection.database === undefined;
    this.sql = sql;
    this.tables = tables;
    this.codec = new JsonCodec(connection.maxPayloadBytes);
    this.logger = connection.logger;
    this.#retryMs = connection.databaseRetryMs;
  }

  /**
   * Connects, applies migrations (or, with `isMigrating` false, checks that they were applied)
   * and subscribes to the schema's notifications.
   */
  static async open(connection: ResolvedConnection, isMigrating = true): Promise<WorkflowStore> {
    const tables = tablesFor(connection.schema);
    const sql = await openSql(connection, tables, isMigrating);
    try {
      const { applied = 0, newest } = isMigrating ? await migrate(sql, tables, connection.databaseRetryMs) : await checkMigrated(sql, tables, connection.databaseRetryMs);
      // During a rolling deploy the old version runs on beside the new one: told, not refused.
      if (applied > newest) {
        connection.logger.warn(
          { schema: tables.schema, applied, newest },
          `schema "${tables.schema}" was migrated by a newer duraflow (to migration ${applied}; this version knows up to ${newest}): upgrade this process, as what the newer version changed may fail here`,
        );
      }
      const store = new WorkflowStore(sql, tables, connection);
      store.#unlisten = await sql.listen(tables.channel, (payload) => store.#notice(payload));
      return store;
    } catch (error) {
      await sql.close().catch(() => undefined);
      throw openFailure(error);
    }
  }

  /** Also hand notifications to `handler` (the engine's start and event pickup). */
  onNotice(handler: (payload: string) => void): void {
    this.#onNotice = handler;
  }

  /** Checks the arguments of a start and builds the row; throws InvalidArgumentError. */
  prepareStart(workflowName: string, input: unknown, options: StartWorkflowOptions = {}): NewWorkflowRow {
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('start options must be an object');
    checkKnownKeys(options, ['workflowId', 'version', 'startAt'], 'start options');
    const id = options.workflowId === undefined ? randomUUID() : checkName(options.workflowId, 'workflowId');
    const version = options.version === undefined ? '1' : checkName(options.version, 'version');
    const now = Date.now();
    let startAt = now;
    if (options.startAt !== undefined) {
      startAt = Math.max(checkEpochMs(options.startAt, 'startAt'), now);
    }
    return {
      id,
      startToken: randomUUID(),
      name: workflowName,
      version,
      input: this.codec.encode(input, 'workflow input'),
      startAt,
      createdAt: now,
    };
  }

  /** Inserts a start directly (a client's path); false if the id existed. */
  async insertStart(row: NewWorkflowRow): Promise<boolean> {
    this.#checkOpen();
    // Retrying is safe: the row's start token makes a retried insert find its own row.
    const { inserted } = await this.#withRetries('starting a workflow', () => flushBatch(this.sql, this.tables, [row], []));
    if (inserted.size === 0) return false;
    await this.notifyEngines(Notice.Start);
    return true;
  }

  /**
   * Stores an event for a running or pending workflow. Returns the inbox row, the workflow's name
   * and its events stored before and not consumed yet (see `insertEvent`), or that the event was
   * stored before; throws WorkflowNotFoundError or WorkflowClosedError.
   */
  async storeEvent(
    workflowId: string,
    eventName: string,
    payload: unknown,
    options: SendEventOptions = {},
  ): Promise<
    | { inboxId: number; workflowName: string; payload: string | undefined; unconsumedBefore: number[] | null }
    | { isDuplicate: true }
  > {
    this.#checkOpen();
    checkName(workflowId, 'workflowId');
    checkName(eventName, 'event name');
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('event options must be an object');
    checkKnownKeys(options, ['eventId'], 'event options');
    const eventId = options.eventId === undefined ? randomUUID() : checkName(options.eventId, 'eventId');
    const encoded = this.codec.encode(payload, `payload of event "${eventName}"`);
    // Retrying is safe: the event id makes a retried insert find the row it stored.
    const stored = await this.#withRetries('sending an event', () =>
      insertEvent(this.sql, this.tables, workflowId, eventName, encoded, eventId),
    );
    switch (stored.outcome) {
      case 'stored':
        return { inboxId: stored.id, workflowName: stored.workflowName, payload: encoded, unconsumedBefore: stored.unconsumedBefore };
      case 'duplicate':
        if (stored.isSame === false) throw new EventIdReusedError(workflowId, eventId);
        return { isDuplicate: true };
      case 'refused':
        if (stored.status === 'missing') throw new WorkflowNotFoundError(workflowId);
        throw new WorkflowClosedError(workflowId, stored.status);
    }
  }

  /**
   * Tells engines there is work (a start, an event). Best effort: the work is committed already, so
   * a notice that fails is logged, not thrown (a caller would retry what is done), and the
   * engines' poll finds the work instead.
   */
  async notifyEngines(notice: (typeof Notice)['Start' | 'Event' | 'Lease']): Promise<void> {
    try {
      await notify(this.sql, this.tables, notice);
    } catch (error) {
      this.logger.warn({ err: error }, 'notifying engines failed; their poll will find the work');
    }
  }

  /** Which engine holds the lease of each workflow name (see `Client.leases`). */
  async leases(): Promise<LeaseState[]> {
    this.#checkOpen();
    const rows = await this.#withRetries('reading the leases', () => readLeases(this.sql, this.tables));
    return rows.map((r) => ({
      workflowName: r.name,
      owner: r.owner,
      epoch: Number(r.epoch),
      expiresAt: r.expires_at,
      isExpired: r.is_expired,
    }));
  }

  /**
   * The workflow's state from the database, with live values from `live` when given;
   * `isRegisteredHere` tells whether the engine asking runs a workflow name now (registers it and
   * holds its lease).
   */
  async inspect(
    workflowId: string,
    live?: () => ActorSnapshot | undefined,
    isRegisteredHere?: (workflowName: string) => boolean,
  ): Promise<WorkflowState> {
    this.#checkOpen();
    checkName(workflowId, 'workflowId');
    // One snapshot: read apart, a step committing in between could show an event both in the
    // history and still queued.
    const stored = await this.#withRetries('inspecting a workflow', () =>
      this.sql.transaction(async (tx) => {
        await tx.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY');
        const row = await loadWorkflow(tx, this.tables, workflowId);
        if (!row) throw new WorkflowNotFoundError(workflowId);
        const history = await loadHistory(tx, this.tables, workflowId);
        const tasks = await tasksOf(tx, this.tables, workflowId);
        const timers = await timersOf(tx, this.tables, workflowId);
        const inbox = await inboxOf(tx, this.tables, workflowId);
        return { row, history, tasks, timers, inbox };
      }),
    );
    return buildWorkflowState(stored, live?.(), Date.now(), isRegisteredHere?.(stored.row.name));
  }

  /**
   * Waits for the workflow to end; resolves with its result or throws WorkflowFailedError.
   * `isRunningHere` skips the database check for a workflow whose end this process will settle.
   */
  async result<Output>(workflowId: string, options: ResultOptions = {}, isRunningHere = false): Promise<Output> {
    this.#checkOpen();
    checkName(workflowId, 'workflowId');
    if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('result options must be an object');
    checkKnownKeys(options, ['timeoutMs'], 'result options');
    const { timeoutMs } = options;
    if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !(timeoutMs >= 0))) {
      throw new InvalidArgumentError('timeoutMs must be a number of milliseconds >= 0');
    }
    const waiting = this.waiters.wait(workflowId, timeoutMs, isRunningHere);
    if (isRunningHere) return this.#toResult<Output>(workflowId, await waiting.promise);
    let outcome: Outcome;
    try {
      // The first read always gets its answer (a workflow that has ended is returned, whatever the
      // timeout); while the database is away, the caller's timeout ends the retries.
      const deadline =
        timeoutMs === undefined || timeoutMs === Infinity
          ? undefined
          : { at: Date.now() + timeoutMs, error: () => resultTimeout(workflowId, timeoutMs) };
      const row = await this.#withRetries('reading a result', () => loadWorkflow(this.sql, this.tables, workflowId), deadline);
      if (!row) throw new WorkflowNotFoundError(workflowId);
      outcome =
        row.status === 'completed' || row.status === 'failed'
          ? { status: row.status, result: row.result, error: row.error }
          : await waiting.promise;
    } finally {
      waiting.cancel();
    }
    return this.#toResult<Output>(workflowId, outcome);
  }

  /**
   * Re-reads the workflows waited on that run elsewhere and settles those that ended. Calls made
   * while a check runs share one follow-up check, so a burst of notices costs two queries. (The
   * engine's poll coalesces the same way but with a flag: callers here await the read.)
   */
  checkWaiters(): Promise<void> {
    // The previous check's failure was reported to its own callers.
    this.#nextCheck ??= this.#lastCheck = this.#lastCheck.catch(() => undefined).then(async () => {
      this.#nextCheck = undefined;
      const ids = this.waiters.idsElsewhere();
      if (ids.length === 0) return;
      const ended = await this.#withRetries('reading results', () => finishedAmong(this.sql, this.tables, ids));
      for (const row of ended) {
        this.waiters.settle(row.id, { status: row.status as Outcome['status'], result: row.result, error: row.error });
      }
    });
    return this.#nextCheck;
  }

  /**
   * This process stopped running some workflows (another engine took their names): callers
   * waiting here for their ends are answered from the database from now on, starting now.
   */
  watchWaitersFromElsewhere(): void {
    this.waiters.moveAllElsewhere();
    this.#checkWaitersUntilDone(1);
  }

  /** Ends waiting calls and closes the database; a second call resolves when the first is done. */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    this.#isClosed = true;
    clearTimeout(this.#recheck);
    this.waiters.rejectAll(new EngineClosedError());
    await this.#unlisten?.().catch(() => undefined);
    await this.sql.close();
  }

  #toResult<Output>(workflowId: string, outcome: Outcome): Output {
    if (outcome.status === 'failed') {
      const failure = outcome.error
        ? readStoredObject<SerializedFailure>(outcome.error, workflowId, 'error')
        : { name: 'Error', message: 'unknown failure' };
      throw new WorkflowFailedError(workflowId, fromFailure(failure));
    }
    return readStored(outcome.result, workflowId, 'result') as Output;
  }

  #notice(payload: string): void {
    if (payload === Notice.Done || payload === 'reconnected') this.#checkWaitersUntilDone(1);
    this.#onNotice?.(payload);
  }

  /**
   * A check that fails (the database out for longer than `databaseRetryMs`) is tried again with
   * backoff while anyone waits on a workflow elsewhere: the notice that asked for it will not come
   * again, and nothing else would ever look.
   */
  #checkWaitersUntilDone(attempt: number): void {
    this.checkWaiters().catch((error: unknown) => {
      this.logger.warn({ err: error }, 'checking results failed; trying again');
      if (this.#isClosed || this.waiters.idsElsewhere().length === 0 || this.#recheck) return;
      this.#recheck = setTimeout(() => {
        this.#recheck = undefined;
        this.#checkWaitersUntilDone(attempt + 1);
      }, retryDelayMs(attempt, 500, 30_000));
    });
  }

  #checkOpen(): void {
    if (this.#isClosed) throw new EngineClosedError();
  }

  /**
   * Runs `operation`, trying again with backoff while the database is unreachable, for up to
   * `databaseRetryMs`; then fails with DatabaseUnavailableError, or earlier with the caller's own
   * `timeout` error. Only for idempotent operations.
   */
  async #withRetries<T>(what: string, operation: () => Promise<T>, timeout?: { at: number; error: () => Error }): Promise<T> {
    const deadline = Date.now() + this.#retryMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await operation();
      } catch (error) {
        // Aborted by a close that ran out of time, which marks the store closed only at its end.
        if (this.#isClosed || error instanceof DriverAbortedError) throw new EngineClosedError();
        if (!isRetryable(error)) throw error;
        // The last try is at the deadline itself: giving up a backoff early would cut it short.
        const now = Date.now();
        if (timeout && timeout.at <= now && timeout.at < deadline) throw timeout.error();
        if (now >= deadline) throw new DatabaseUnavailableError(what, error);
        const until = timeout ? Math.min(deadline, timeout.at) : deadline;
        await pause(Math.min(retryDelayMs(attempt, 50, 1_000), until - now));
      }
    }
  }
}
