import net from 'node:net';

import pg from 'pg';

import { retryDelayMs } from './backoff.js';
import type { ExecOptions, Queryable, QueryResult, Sql } from './sql.js';

/** Options of the `pg` driver. */
export interface PgDriverOptions {
  connectionString: string;
  /** Connections in the pool. */
  maxConnections: number;
  /** Called for connection errors that no statement is waiting on (idle clients, LISTEN). */
  onError: (error: Error) => void;
  /**
   * How often the LISTEN connection is checked, and how long the check may take: a connection
   * dropped silently (by a NAT or a firewall) would otherwise deliver nothing, for hours. @default 15000
   */
  listenCheckMs?: number;
  /**
   * How long a statement may go without an answer before it fails as if the database were gone
   * (`Query read timeout`); a script run with `isLong` has none. @default 30000
   */
  readTimeoutMs?: number;
}

/**
 * Silence on a connection before TCP keepalive probes it. A statement without a read timeout (a
 * migration's) is cut off only by keepalive when the server drops out of reach silently: probing
 * after 10 s instead of the system's two hours finds it gone in about 11 minutes with Linux's
 * default probes (9, 75 s apart).
 */
const KEEPALIVE_IDLE_MS = 10_000;

/** A statement as pg takes it; pg reads `query_timeout` from it, which its types leave out. */
type Statement = pg.QueryConfig & { query_timeout?: number };

/** What the statements of an aborted driver fail with (see `Sql.abort`). */
export class DriverAbortedError extends Error {
  readonly code = 'DURAFLOW_DRIVER_ABORTED';
  constructor() {
    super('the database connections were dropped: the database did not answer in time');
    this.name = 'DriverAbortedError';
  }
}

/**
 * Driver over a `pg.Pool`. LISTEN runs on a dedicated client outside the pool, re-established
 * with backoff if it drops, so notifications never steal a pooled connection.
 *
 * Modes: open; aborted (`abort()`: statements fail at once, connections are dropped, and any
 * the pool still opens is dropped as it starts); closed.
 */
export class PgDriver implements Sql {
  readonly #pool: pg.Pool;
  readonly #options: PgDriverOptions;
  readonly #listeners = new Map<string, Set<(payload: string) => void>>();
  #listenClient: pg.Client | undefined;
  #listenConnecting: Promise<pg.Client> | undefined;
  #closed = false;
  /**
   * Statements and transactions under way, including those still waiting for a connection:
   * `close()` lets them finish first, as a pool that is ending serves no waiting request (it would
   * fail only at connectionTimeoutMillis, and not keep the process alive until then).
   */
  readonly #underWay = new Set<Promise<unknown>>();
  /** The sockets of every connection, pooled or LISTEN: pg has no public way to drop one that hangs. */
  readonly #sockets = new Set<net.Socket>();
  #abortError: DriverAbortedError | undefined;
  /** Given to each statement rather than to the pool, so that a long one can go without it. */
  readonly #readTimeoutMs: number;

  constructor(options: PgDriverOptions) {
    this.#options = options;
    this.#readTimeoutMs = options.readTimeoutMs ?? 30_000;
    this.#pool = new pg.Pool({
      connectionString: options.connectionString,
      stream: () => this.#socket(),
      max: options.maxConnections,
      idleTimeoutMillis: 30_000,
      // A connection that cannot be made, or a statement that gets no answer (#readTimeoutMs),
      // fails (and is retried) instead of hanging the engine forever.
      connectionTimeoutMillis: 10_000,
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEPALIVE_IDLE_MS,
    });
    // An idle client that loses its connection emits 'error' on the pool; unhandled it would
    // crash the process (pg-pool README, 'error' event).
    this.#pool.on('error', (error) => this.#onError(error));
    this.#pool.on('connect', (client) => client.on('error', (error) => this.#onError(error)));
  }

  /** A connection's socket, tracked for abort(); after it, one that fails as it connects. */
  #socket(): net.Socket {
    const socket = new net.Socket();
    const abortError = this.#abortError;
    if (abortError) {
      // pg connects it right after this returns; destroyed before, it would be connected anyway.
      process.nextTick(() => socket.destroy(abortError));
      return socket;
    }
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    return socket;
  }

  /** Connection errors after abort() are the dropped connections themselves: not worth a warning each. */
  #onError(error: Error): void {
    if (!this.#abortError) this.#options.onError(error);
  }

  abort(): void {
    if (this.#abortError) return;
    this.#abortError = new DriverAbortedError();
    // A statement on a dropped connection fails at once, and so does one waiting for a pooled
    // connection: the pool opens it anew for the waiter, and #socket drops it as it starts.
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
  }

  /** A statement as pg takes it, with the read timeout; `isLong` goes without one. */
  #statement(text: string, params?: unknown[], name?: string, isLong = false): Statement {
    return { name, text, values: params, query_timeout: isLong ? undefined : this.#readTimeoutMs };
  }

  query<Row>(text: string, params?: unknown[], name?: string): Promise<QueryResult<Row>> {
    return this.#track(async () => {
      const result = await this.#pool.query(this.#statement(text, params, name));
      return { rows: result.rows as Row[], rowCount: result.rowCount ?? 0 };
    });
  }

  exec(script: string, { isLong = false }: ExecOptions = {}): Promise<void> {
    return this.#track(async () => {
      await this.#pool.query(this.#statement(script, undefined, undefined, isLong));
    });
  }

  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.#track(() => this.#transaction(work));
  }

  async #track<T>(operation: () => Promise<T>): Promise<T> {
    if (this.#abortError) throw this.#abortError;
    const running = operation();
    this.#underWay.add(running);
    try {
      return await running;
    } finally {
      this.#underWay.delete(running);
    }
  }

  async #transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
    const client = await this.#pool.connect();
    // The transaction's methods below have their own `this`.
    const statement = this.#statement.bind(this);
    let broken: Error | undefined;
    try {
      await client.query(statement('BEGIN'));
      const tx: Queryable = {
        async query<Row>(text: string, params?: unknown[], name?: string) {
          const result = await client.query(statement(text, params, name));
          return { rows: result.rows as Row[], rowCount: result.rowCount ?? 0 };
        },
        async exec(script: string, { isLong = false }: ExecOptions = {}) {
          await client.query(statement(script, undefined, undefined, isLong));
        },
      };
      const value = await work(tx);
      await client.query(statement('COMMIT'));
      return value;
    } catch (error) {
      try {
        await client.query(statement('ROLLBACK'));
      } catch (rollbackError) {
        // The connection is gone; destroy it rather than hand it to the next caller.
        broken = rollbackError as Error;
      }
      throw error;
    } finally {
      client.release(broken);
    }
  }

  async listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>> {
    let handlers = this.#listeners.get(channel);
    const isNew = !handlers;
    if (!handlers) {
      handlers = new Set();
      this.#listeners.set(channel, handlers);
    }
    handlers.add(onPayload);
    const client = await this.#listenConnection();
    if (isNew) await client.query(`LISTEN "${channel}"`);
    return async () => {
      handlers.delete(onPayload);
      if (handlers.size === 0) {
        this.#listeners.delete(channel);
        await this.#listenClient?.query(`UNLISTEN "${channel}"`).catch(() => undefined);
      }
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    // A reconnect under way (at most connectionTimeoutMillis) sees #closed and ends its client.
    await this.#listenConnecting?.catch(() => undefined);
    const listenClient = this.#listenClient;
    this.#listenClient = undefined;
    await listenClient?.end().catch(() => undefined);
    while (this.#underWay.size > 0) await Promise.allSettled([...this.#underWay]);
    await this.#pool.end();
  }

  #listenConnection(): Promise<pg.Client> {
    if (this.#listenClient) return Promise.resolve(this.#listenClient);
    this.#listenConnecting ??= this.#connectListener().finally(() => {
      this.#listenConnecting = undefined;
    });
    return this.#listenConnecting;
  }

  async #connectListener(): Promise<pg.Client> {
    const checkMs = this.#options.listenCheckMs ?? 15_000;
    const client = new pg.Client({
      connectionString: this.#options.connectionString,
      stream: () => this.#socket(),
      connectionTimeoutMillis: 10_000,
      query_timeout: checkMs,
      keepAlive: true,
      keepAliveInitialDelayMillis: KEEPALIVE_IDLE_MS,
    });
    client.on('notification', (message) => {
      const handlers = this.#listeners.get(message.channel);
      if (!handlers) return;
      for (const handler of handlers) handler(message.payload ?? '');
    });
    client.on('error', (error) => {
      this.#onError(error);
      this.#reconnectListener(client);
    });
    client.on('end', () => this.#reconnectListener(client));
    try {
      await client.connect();
      for (const channel of this.#listeners.keys()) await client.query(`LISTEN "${channel}"`);
      if (this.#closed) throw new Error('the driver was closed while LISTEN was being set up');
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
    this.#listenClient = client;
    const check = setInterval(() => {
      if (this.#listenClient !== client) {
        clearInterval(check);
        return;
      }
      // No answer within checkMs (query_timeout) fails the query: the connection is replaced.
      client.query('SELECT 1').catch((error: unknown) => {
        clearInterval(check);
        this.#onError(error instanceof Error ? error : new Error(String(error)));
        this.#reconnectListener(client);
      });
    }, checkMs);
    check.unref();
    return client;
  }

  #reconnectListener(dead: pg.Client): void {
    if (this.#listenClient !== dead || this.#closed || this.#abortError) return;
    this.#listenClient = undefined;
    void dead.end().catch(() => undefined);
    let tries = 0;
    const attempt = (): void => {
      if (this.#closed || this.#abortError || this.#listeners.size === 0) return;
      this.#listenConnection().then(
        // A notification sent while we were disconnected is lost; listeners are told so they
        // can re-read what they were waiting for.
        () => {
          for (const handlers of this.#listeners.values()) for (const h of handlers) h('reconnected');
        },
        () => setTimeout(attempt, retryDelayMs(++tries, 100, 5_000)).unref(),
      );
    };
    setTimeout(attempt, retryDelayMs(0, 100, 5_000)).unref();
  }
}
