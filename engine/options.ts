import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import type { PGlite } from '@electric-sql/pglite';

import { shownValue } from '../actors/shown-value.js';
import type { WorkflowFunction } from '../actors/workflow-context.js';
import type { Logger } from '../storage/logger.js';
import { isValidSchemaName } from '../storage/sql.js';
import type { ActivityFunction } from './activity-runner.js';
import { MAX_DELAY_MS } from './timer-service.js';
import { checkKnownKeys, checkName } from './validate.js';
import { checkRetryPolicy, DEFAULT_RETRY_POLICY, type ResolvedRetryPolicy, resolveRetryPolicy, type RetryPolicy } from './retry-policy.js';

export type { Logger };

/** Where the data lives; shared by the engine and the client. */
export interface ConnectionOptions {
  /**
   * A `postgres://` URL, or a PGlite instance you created (it is not closed by `close()`). When
   * absent, an embedded PGlite database in `dataDir` is used.
   */
  database?: string | PGlite | undefined;
  /**
   * Folder of the embedded database (a path, or a path after `file://`, taken literally as PGlite
   * takes it: not percent-decoded, and `file://data` is the relative `data`), created if missing;
   * `memory://` keeps it in memory only; another `scheme://` is a TypeError. Ignored when
   * `database` is set.
   * The first start in an empty folder makes the database all or nothing: one killed midway
   * leaves `duraflow.creating` behind, and the next start deletes what it left and starts over.
   * @default './.duraflow'
   */
  dataDir?: string | undefined;
  /**
   * Postgres schema holding duraflow's tables: lower-case letters, digits and `_`, starting with
   * a letter or `_`, at most 48 characters, and not one Postgres reserves (`pg_…`,
   * `information_schema`). @default 'duraflow'
   */
  schema?: string | undefined;
  /** Connections in the `pg` pool (ignored for PGlite). @default 10 */
  maxConnections?: number | undefined;
  /** Receives debug/info/warn/error logs (pino-compatible). @default warnings and errors on stderr */
  logger?: Logger | undefined;
  /** Largest JSON payload (input, result, event, variable), in bytes. @default 1048576 (1 MiB) */
  maxPayloadBytes?: number | undefined;
  /**
   * How long a client call (start, event, inspect, result, leases) keeps retrying while the database is
   * unreachable before failing with DatabaseUnavailableError, in ms; also how long opening waits for
   * a lock that another session holds and that its migrations need (the migration lock, taken only
   * when a migration is pending, or a table lock) or its read of the applied ones. @default 10000
   */
  databaseRetryMs?: number | undefined;
}

/** Options of `createEngine`. */
export interface EngineOptions extends ConnectionOptions {
  /** Workflows this engine runs, by name. */
  workflows: Record<string, WorkflowFunction<never, unknown>>;
  /**
   * Module whose exported functions are the activities, run in worker threads. A URL or a file
   * path (a relative one is taken from the working directory); Node loads it itself in each
   * thread, so it is JavaScript, not TypeScript run through a loader such as tsx's.
   * @default none (only `inlineActivities`)
   */
  activities?: URL | string | undefined;
  /** Activities run on the engine thread instead (cheap, non-blocking functions). @default {} */
  inlineActivities?: Record<string, ActivityFunction> | undefined;
  /**
   * Worker threads for activities; up to four times as many more start when attempts must run
   * alone (after a thread died or was blocked), and go when idle. @default os.availableParallelism()
   */
  activityThreads?: number | undefined;
  /**
   * Attempts per activity thread run at once (activities are mostly I/O-bound): the pool runs at
   * most `activityThreads` times this many; one thread may run more for a while, as threads take
   * attempts in batches. @default 256
   */
  activityConcurrency?: number | undefined;
  /** Heap limit of each activity thread in MiB; a thread past it is replaced. @default Node's */
  activityMaxHeapMb?: number | undefined;
  /** Default retry policy of activities; each field can be overridden per `ctx.activities()`. */
  retry?: RetryPolicy | undefined;
  /** Workflow actors kept in memory; the least recently used idle ones beyond are evicted. @default 10000 */
  maxCachedWorkflows?: number | undefined;
  /** Safety-net poll for starts and events from other processes, in ms (NOTIFY is the fast path). @default 2000 */
  pollIntervalMs?: number | undefined;
  /** History rows waiting for a flush beyond which actors pause. @default 50000 */
  walHighWaterEvents?: number | undefined;
  /**
   * Serve the metrics registry on `http://host:port/metrics`. `port: 0` picks a free port
   * (`engine.metricsUrl` tells which); `port` defaults to 9464 and `host` to `127.0.0.1`.
   * @default not served (still readable via `engine.metrics`)
   */
  metrics?: { port?: number | undefined; host?: string | undefined } | undefined;
  /**
   * How long this engine's lease on its workflow names lasts without renewal, in ms: an integer
   * from 500 to 2^31-1. It renews every third of it; another engine registering the same names
   * claims them on the same beat of its own, so after a crash of this one they run elsewhere (or
   * here, restarted) within about this long plus a third (on the embedded database in `dataDir`,
   * which one process owns: at once). Shorter is a faster takeover, but then a shorter database
   * outage holds back activity dispatches and timers until a renewal gets through. @default 10000
   */
  leaseTtlMs?: number | undefined;
  /**
   * How long `close()` waits for the database, in ms (an integer from 1 to 2^31-1): for running
   * steps to commit, for the last flushes and the release of the leases. Past it, the engine gives
   * up on a database that does not answer (stopped, hung, a statement blocked on a lock) and
   * drops its connections: nothing committed is lost, what did not commit is recovered by the
   * next engine on the names (after the leases expire, as they could not be ended), and `close()`
   * resolves a moment later. @default 10000
   */
  closeTimeoutMs?: number | undefined;
}

/** Options of `createClient`. */
export interface ClientOptions extends ConnectionOptions {
  /**
   * Create the schema and its tables, or bring them up to this version, when opening. With
   * `false` nothing is created or migrated: a schema without duraflow's tables, one an older
   * version left, or a `dataDir` with no database in it is refused with `ConfigurationError` (for
   * read-only tools, where a mistyped name must not create anything). @default true
   */
  migrate?: boolean | undefined;
  /**
   * How long `close()` waits for the database, in ms (an integer from 1 to 2^31-1): for the
   * statements of calls under way and the end of its connections. Past it, the client gives up
   * on a database that does not answer (stopped, hung) and drops its connections: the calls still
   * under way end with `EngineClosedError` (a start among them may be stored all the same, as when
   * a connection is lost mid-commit), and `close()` resolves a moment later. A client writes
   * nothing of its own on close, so nothing else is lost. @default 10000
   */
  closeTimeoutMs?: number | undefined;
}

/** Connection options with defaults applied. */
export interface ResolvedConnection {
  database: string | PGlite | undefined;
  dataDir: string;
  schema: string;
  maxConnections: number;
  logger: Logger;
  maxPayloadBytes: number;
  databaseRetryMs: number;
}

/** Engine options with defaults applied. */
export interface ResolvedEngineOptions extends ResolvedConnection {
  workflows: ReadonlyMap<string, WorkflowFunction<never, unknown>>;
  activities: URL | undefined;
  inlineActivities: Readonly<Record<string, ActivityFunction>>;
  activityThreads: number;
  activityConcurrency: number;
  activityMaxHeapMb: number | undefined;
  retry: ResolvedRetryPolicy;
  maxCachedWorkflows: number;
  pollIntervalMs: number;
  walHighWaterEvents: number;
  metrics: { port: number; host: string } | undefined;
  leaseTtlMs: number;
  closeTimeoutMs: number;
}

/** Client options with defaults applied. */
export interface ResolvedClientOptions extends ResolvedConnection {
  migrate: boolean;
  closeTimeoutMs: number;
}

/** Logs warnings and errors to stderr; ignores the rest. */
export const stderrLogger: Logger = {
  debug() {},
  info() {},
  warn(obj, msg) {
    console.warn(`[duraflow] ${msg ?? ''}`, obj);
  },
  error(obj, msg) {
    console.error(`[duraflow] ${msg ?? ''}`, obj);
  },
};

function positiveInt(value: unknown, name: string, fallback: number, allowInfinity = false): number {
  if (value === undefined) return fallback;
  if (allowInfinity && value === Infinity) return value;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new RangeError(`options.${name} must be a positive integer, got ${shownValue(value)}`);
  }
  return value;
}

/** Most activity threads: each is a V8 isolate of its own (tens of MB), and they share the cores. */
const MAX_ACTIVITY_THREADS = 1024;

function atMost(value: number, max: number, name: string): number {
  if (value > max) throw new RangeError(`options.${name} must be at most ${max}, got ${value}`);
  return value;
}

/** A delay a timer can keep: past 2^31-1 ms Node fires it at once (a poll every millisecond). */
function atMostATimer(ms: number, name: string): number {
  if (ms > MAX_DELAY_MS) throw new RangeError(`options.${name} must be at most ${MAX_DELAY_MS} ms (24.8 days), got ${ms}`);
  return ms;
}

function atLeast(ms: number, min: number, name: string): number {
  if (ms < min) throw new RangeError(`options.${name} must be at least ${min} ms, got ${ms}`);
  return ms;
}

/** The options every connection takes (an engine's and a client's add their own). */
const CONNECTION_KEYS = ['database', 'dataDir', 'schema', 'maxConnections', 'logger', 'maxPayloadBytes', 'databaseRetryMs'] as const;
const ENGINE_KEYS = [
  ...CONNECTION_KEYS,
  'workflows',
  'activities',
  'inlineActivities',
  'activityThreads',
  'activityConcurrency',
  'activityMaxHeapMb',
  'retry',
  'maxCachedWorkflows',
  'pollIntervalMs',
  'walHighWaterEvents',
  'metrics',
  'leaseTtlMs',
  'closeTimeoutMs',
] as const;
/** The options of `createClient`. */
export const CLIENT_KEYS = [...CONNECTION_KEYS, 'migrate', 'closeTimeoutMs'] as const;

/** Throws a TypeError naming an option `options` has that is not one of `known`. */
export function checkOptionKeys(options: object, known: readonly string[]): void {
  checkKnownKeys(options, known, 'options', (message) => new TypeError(message));
}

/** Checks and completes the connection options; throws TypeError/RangeError naming the field. */
export function resolveConnection(options: ConnectionOptions): ResolvedConnection {
  if (typeof options !== 'object' || options === null) throw new TypeError('options must be an object');
  const { database, dataDir = './.duraflow', schema = 'duraflow' } = options;
  if (database !== undefined && !isUsableDatabase(database)) {
    throw new TypeError('options.database must be a postgres:// URL or a PGlite instance');
  }
  if (typeof database === 'string' && !/^postgres(ql)?:\/\//.test(database)) {
    throw new TypeError('options.database must be a postgres:// or postgresql:// URL');
  }
  if (typeof dataDir !== 'string' || dataDir.length === 0) throw new TypeError('options.dataDir must be a non-empty string');
  // PGlite's prefixes are case-sensitive and it reads an unknown one as a relative path; the
  // browser stores (idb://, opfs-ahp://) do not exist in Node.
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(dataDir) && !/^(file|memory):\/\//.test(dataDir)) {
    throw new TypeError(`options.dataDir must be a path, a file:// URL or memory://, got ${JSON.stringify(dataDir.slice(0, 60))}`);
  }
  // PGlite takes what follows file:// for the path, and nothing there is no directory at all.
  if (dataDir === 'file://') throw new TypeError('options.dataDir must name a directory after file://');
  if (typeof schema !== 'string' || !isValidSchemaName(schema)) {
    const shown = typeof schema === 'string' ? JSON.stringify(schema.slice(0, 60)) + (schema.length > 60 ? '…' : '') : typeof schema;
    throw new RangeError(
      `options.schema must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 48 chars, not pg_… or information_schema), got ${shown}`,
    );
  }
  const logger = options.logger ?? stderrLogger;
  for (const level of ['debug', 'info', 'warn', 'error'] as const) {
    if (typeof logger[level] !== 'function') throw new TypeError(`options.logger.${level} must be a function`);
  }
  return {
    database,
    dataDir,
    schema,
    maxConnections: positiveInt(options.maxConnections, 'maxConnections', 10),
    logger,
    maxPayloadBytes: positiveInt(options.maxPayloadBytes, 'maxPayloadBytes', 1024 * 1024),
    databaseRetryMs: positiveInt(options.databaseRetryMs, 'databaseRetryMs', 10_000),
  };
}

/** A URL to check further, or an object that can be a PGlite instance (it has its methods). */
function isUsableDatabase(database: unknown): boolean {
  if (typeof database === 'string') return true;
  if (typeof database !== 'object' || database === null) return false;
  const db = database as Record<string, unknown>;
  return typeof db.query === 'function' && typeof db.transaction === 'function';
}

function toModuleUrl(activities: URL | string): URL {
  if (activities instanceof URL) return activities;
  if (typeof activities !== 'string' || activities.length === 0) {
    throw new TypeError('options.activities must be a URL or a file path');
  }
  if (/^(file|data):/.test(activities)) return new URL(activities);
  // Node loads modules from files only: another scheme would be taken for a relative path.
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(activities)) {
    throw new TypeError(`options.activities must be a file path, a file: URL or a data: URL, got ${JSON.stringify(activities.slice(0, 60))}`);
  }
  return pathToFileURL(path.resolve(activities));
}

function resolveMetrics(metrics: EngineOptions['metrics']): ResolvedEngineOptions['metrics'] {
  if (metrics === undefined) return undefined;
  if (typeof metrics !== 'object' || metrics === null) throw new TypeError('options.metrics must be { port, host }');
  checkKnownKeys(metrics, ['port', 'host'], 'options.metrics', (message) => new TypeError(message));
  const { port = 9464, host = '127.0.0.1' } = metrics;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`options.metrics.port must be an integer 0..65535, got ${shownValue(port)}`);
  }
  if (typeof host !== 'string' || host.length === 0) throw new TypeError('options.metrics.host must be a host name or address');
  return { port, host };
}

/** Checks and completes the engine options; throws TypeError/RangeError naming the field. */
export function resolveEngineOptions(options: EngineOptions): ResolvedEngineOptions {
  const connection = resolveConnection(options);
  checkOptionKeys(options, ENGINE_KEYS);
  const { workflows, inlineActivities = {} } = options;
  if (typeof workflows !== 'object' || workflows === null) {
    throw new TypeError('options.workflows must be an object of workflow functions by name');
  }
  const byName = new Map<string, WorkflowFunction<never, unknown>>();
  for (const [name, fn] of Object.entries(workflows)) {
    try {
      checkName(name, `workflow name ${JSON.stringify(name.slice(0, 60))}`);
    } catch (error) {
      throw new RangeError(`options.workflows: ${(error as Error).message}`);
    }
    if (typeof fn !== 'function') throw new TypeError(`options.workflows.${name} must be a function`);
    byName.set(name, fn);
  }
  if (typeof inlineActivities !== 'object' || inlineActivities === null) {
    throw new TypeError('options.inlineActivities must be an object of functions by name');
  }
  for (const [name, fn] of Object.entries(inlineActivities)) {
    // ctx.activities refuses such a name, so an activity registered under it could never run.
    try {
      checkName(name, `activity name ${JSON.stringify(name.slice(0, 60))}`);
    } catch (error) {
      throw new RangeError(`options.inlineActivities: ${(error as Error).message}`);
    }
    if (typeof fn !== 'function') throw new TypeError(`options.inlineActivities.${name} must be a function`);
  }
  return {
    ...connection,
    workflows: byName,
    activities: options.activities === undefined ? undefined : toModuleUrl(options.activities),
    inlineActivities,
    activityThreads: atMost(
      positiveInt(options.activityThreads, 'activityThreads', os.availableParallelism()),
      MAX_ACTIVITY_THREADS,
      'activityThreads',
    ),
    activityConcurrency: positiveInt(options.activityConcurrency, 'activityConcurrency', 256),
    activityMaxHeapMb:
      options.activityMaxHeapMb === undefined ? undefined : positiveInt(options.activityMaxHeapMb, 'activityMaxHeapMb', 0),
    retry: resolveRetryPolicy(DEFAULT_RETRY_POLICY, checkRetryPolicy(options.retry, 'options.retry')),
    maxCachedWorkflows: positiveInt(options.maxCachedWorkflows, 'maxCachedWorkflows', 10_000, true),
    pollIntervalMs: atMostATimer(positiveInt(options.pollIntervalMs, 'pollIntervalMs', 2_000), 'pollIntervalMs'),
    walHighWaterEvents: positiveInt(options.walHighWaterEvents, 'walHighWaterEvents', 50_000),
    leaseTtlMs: atLeast(atMostATimer(positiveInt(options.leaseTtlMs, 'leaseTtlMs', 10_000), 'leaseTtlMs'), 500, 'leaseTtlMs'),
    closeTimeoutMs: resolveCloseTimeoutMs(options.closeTimeoutMs),
    metrics: resolveMetrics(options.metrics),
  };
}

/** Checks and completes the client options; throws TypeError/RangeError naming the field. */
export function resolveClientOptions(options: ClientOptions): ResolvedClientOptions {
  const connection = resolveConnection(options);
  checkOptionKeys(options, CLIENT_KEYS);
  const { migrate = true } = options;
  if (typeof migrate !== 'boolean') throw new TypeError(`options.migrate must be a boolean, got ${typeof migrate}`);
  return { ...connection, migrate, closeTimeoutMs: resolveCloseTimeoutMs(options.closeTimeoutMs) };
}

/** The engine's and the client's alike: past a timer's reach, close() would not wait at all. */
function resolveCloseTimeoutMs(value: unknown): number {
  return atMostATimer(positiveInt(value, 'closeTimeoutMs', 10_000), 'closeTimeoutMs');
}
