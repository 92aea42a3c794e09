/**
 * The one interface every storage driver implements. Both drivers run the same SQL text;
 * anything driver-specific (pools, reconnects, LISTEN plumbing) stays behind it.
 */

/** Rows of a statement plus the number of rows it touched. */
export interface QueryResult<Row> {
  rows: Row[];
  rowCount: number;
}

/** Options of `exec`. */
export interface ExecOptions {
  /**
   * The script may take long (a migration that rewrites or indexes a large table): its answer is
   * waited for however long it takes, rather than for the driver's read timeout, meant for
   * statements that answer in moments. Its waits for locks must be bounded (lock_timeout). @default false
   */
  isLong?: boolean;
}

/** Anything that runs a parameterised statement: the driver itself or an open transaction. */
export interface Queryable {
  /**
   * Runs one statement. `name` makes it a prepared statement on drivers that support them (the
   * text must then never change for that name).
   */
  query<Row = Record<string, unknown>>(text: string, params?: unknown[], name?: string): Promise<QueryResult<Row>>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(script: string, options?: ExecOptions): Promise<void>;
}

/** A database handle: statements, transactions, notifications. */
export interface Sql extends Queryable {
  /** Runs `work` inside BEGIN … COMMIT on one connection; rolls back if it throws. */
  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T>;
  /**
   * Subscribes to a NOTIFY channel. The channel name must already be validated: LISTEN takes no
   * parameters. Resolves once the subscription is live; the returned function unsubscribes.
   */
  listen(channel: string, onPayload: (payload: string) => void): Promise<() => Promise<void>>;
  /**
   * Gives up on the database: every statement under way, and every one after, fails at once,
   * and the connections are dropped without a goodbye (one that gets no answer would keep its
   * goodbye waiting). A statement the server is still running may yet commit, as when a process
   * dies mid-commit. For closing against a database that stopped answering; `close()` still
   * releases what is left.
   */
  abort(): void;
  /** Releases connections (or the embedded instance, when the driver created it). */
  close(): Promise<void>;
}

/** Qualified table names of one schema, computed once from a validated identifier. */
export interface Tables {
  readonly schema: string;
  readonly workflows: string;
  readonly history: string;
  readonly timers: string;
  readonly activityTasks: string;
  readonly inbox: string;
  readonly walCommits: string;
  readonly leases: string;
  readonly migrations: string;
  /** NOTIFY channel shared by every process on this schema. */
  readonly channel: string;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,47}$/;

/**
 * Whether `schema` can name the engine's schema: a lower-case identifier of at most 48 chars, not
 * one Postgres reserves (`pg_temp` is each session's temporary schema, whose tables vanish with
 * the connection; other `pg_` names are refused; `information_schema` is left out of dumps).
 */
export function isValidSchemaName(schema: string): boolean {
  return SCHEMA_NAME.test(schema) && !schema.startsWith('pg_') && schema !== 'information_schema';
}

/**
 * Table names for `schema`. The name is checked against a strict identifier pattern first, so the
 * quoted result is the only non-parameter text that ever reaches SQL.
 */
export function tablesFor(schema: string): Tables {
  if (!isValidSchemaName(schema)) throw new RangeError(`invalid schema name: ${JSON.stringify(schema)}`);
  const q = `"${schema}"`;
  return {
    schema,
    workflows: `${q}.workflows`,
    history: `${q}.history`,
    timers: `${q}.timers`,
    activityTasks: `${q}.activity_tasks`,
    inbox: `${q}.inbox`,
    walCommits: `${q}.wal_commits`,
    leases: `${q}.leases`,
    migrations: `${q}.migrations`,
    channel: `duraflow_${schema}`,
  };
}
