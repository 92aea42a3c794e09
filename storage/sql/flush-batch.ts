import { raisedReason } from '../pg-errors.js';
import { changesRow, type NewWorkflowRow, type WorkflowWrite } from '../rows.js';
import type { Queryable, Tables } from '../sql.js';
import { type FenceParams, LeaseLostError } from './leases.js';

/** What one flush changed. */
export interface FlushResult {
  /** Ids of the workflows the batch created (a taken id is absent). */
  inserted: Set<string>;
}

/** Marks the error the statement raises on purpose when a row to update is missing. */
const MISSING_ROW_MARKER = 'duraflow-missing-workflow-row';
/** Marks the error the statement raises on purpose when the engine no longer holds a lease. */
const LEASE_LOST_MARKER = 'duraflow-lease-lost';

/**
 * One part of the flush statement: a CTE over its own parameters (`$n` in the text is the part's
 * n-th parameter; the statement renumbers them). A part is left out when the batch has nothing
 * for it, so a lone workflow's step runs a small statement.
 */
interface Part {
  /** `type`: how a part carried as one JSON document (starts, history, updates) reads it. */
  cte: (t: Tables, type: DocumentType) => string;
  params: number;
  /** The part as the statement's own main clause, when it comes last and nothing is read back. */
  main?: (t: Tables) => string;
}

/**
 * A part's rows as one JSON document: jsonb, read once and then field by field by position; json,
 * slower, for a document too big for one jsonb value (see `MAX_JSONB_CHARS`).
 */
type DocumentType = 'json' | 'jsonb';

/** How the flush's token insert checks the leases of the names it writes (see `commitFenced`). */
type Fencing = 'none' | 'names' | 'oneName';

/**
 * The flush's token insert, with the ids of the workflows the flush created (`withStarts`: read
 * from `ins_wf`), and only if the lease check holds (see `commitFenced`).
 */
function tokenInsert(t: Tables, withStarts: boolean, fencing: Fencing): string {
  const inserted = withStarts ? `(SELECT coalesce(array_agg(id), '{}') FROM ins_wf)` : 'ARRAY[]::text[]';
  if (fencing === 'none') return `INSERT INTO ${t.walCommits} (token, inserted) SELECT $1, ${inserted}`;
  const [wanted, held] =
    fencing === 'names'
      ? [
          'cardinality($3::text[])',
          `SELECT FROM ${t.leases} l JOIN unnest($3::text[], $4::bigint[]) AS u(n, e) ON l.name = u.n AND l.epoch = u.e
                 WHERE l.owner = $2
                 ORDER BY l.name COLLATE "C"
                 FOR SHARE OF l`,
        ]
      : ['1', `SELECT FROM ${t.leases} l WHERE l.name = $3 AND l.epoch = $4 AND l.owner = $2 FOR SHARE OF l`];
  return `INSERT INTO ${t.walCommits} (token, inserted)
    SELECT $1, ${inserted}
    WHERE (SELECT CASE WHEN count(*) <> ${wanted}
             THEN ('${LEASE_LOST_MARKER}: this engine no longer holds the lease of '
                   || (${wanted} - count(*)) || ' workflow name(s) it wrote')::int
             ELSE 1 END
           FROM (${held}) held) = 1`;
}

/**
 * The token's insert as a part: a CTE, or (with no starts to read back) the statement's own main
 * clause. It takes the token, and with a lease check the owner, the names and their epochs.
 */
function tokenPart(withStarts: boolean, fencing: Fencing): Part {
  const insert = (t: Tables): string => tokenInsert(t, withStarts, fencing);
  return {
    params: fencing === 'none' ? 1 : 4,
    cte: (t) => `ins_c AS (${insert(t)})`,
    ...(withStarts ? {} : { main: insert }),
  };
}

/** The history part; `withCreates` keeps creating steps' rows only if created. */
function historyCte(t: Tables, type: DocumentType, withCreates: boolean): string {
  return `ins_h AS (
    INSERT INTO ${t.history} (workflow_id, seq, activation, type, command_id, payload, at)
    SELECT r->>0, (r->>1)::int, (r->>2)::int, r->>3, (r->>4)::int, r->>5, to_timestamp((r->>6)::float8 / 1000.0)
    FROM ${type}_array_elements($1::${type}) AS r${withCreates ? `
    WHERE r->>7 IS NULL OR r->>0 IN (SELECT id FROM ins_wf)` : ''})`;
}

/**
 * Longest document sent as jsonb by default: at about 3 bytes a character at most it stays under
 * jsonb's 256 MB. The WAL keeps flushes well below this; one step bigger than that alone goes as
 * json instead.
 */
const MAX_JSONB_CHARS = 64 * 1024 * 1024;

const PARTS = {
  // A row with the same id and the same start token is this start's own, committed by an
  // earlier try whose answer was lost: it counts as inserted (the no-op update returns it).
  // A start made together with its first step comes in with that step's status, vars and times.
  starts: {
    params: 1,
    cte: (t, type) => `ins_wf AS (
    INSERT INTO ${t.workflows} AS w
      (id, name, version, status, input, start_at, created_at, start_token, vars, result, error, started_at, completed_at)
    SELECT r->>0, r->>1, r->>2, r->>7, r->>3, to_timestamp((r->>4)::float8 / 1000.0), to_timestamp((r->>5)::float8 / 1000.0),
           r->>6, coalesce(r->>8, '{}'), r->>9, r->>10, to_timestamp((r->>11)::float8 / 1000.0),
           to_timestamp((r->>12)::float8 / 1000.0)
    FROM ${type}_array_elements($1::${type}) AS r
    ON CONFLICT (id) DO UPDATE SET start_token = w.start_token WHERE w.start_token = excluded.start_token
    RETURNING id)`,
  },
  // One JSON document for all history rows, each an array (see `DocumentRow`): JSON.stringify of
  // arrays is native and writes no keys, and Postgres converts the document to jsonb once and then
  // reads each field by position (cheaper than json_to_recordset's parse of keyed objects).
  history: { params: 1, cte: (t, type) => historyCte(t, type, false) },
  // The same, when some steps create their workflow (their rows carry an eighth field): those rows
  // exist only if it was created.
  historyWithCreates: { params: 1, cte: (t, type) => historyCte(t, type, true) },
  // A row to update that does not exist aborts the whole statement: the cast in `checked` fails at
  // run time, only on that branch, with a message naming the problem.
  // How many rows to update is read from the document itself: `checked` compares it with the rows
  // the UPDATE found.
  // The rows are matched by a range of one key (>= and <=, which under a deterministic collation,
  // the only kind a database or this column can have, is equality), not by `=`: with `=` the
  // planner may hash the document's rows, which it takes for 100 whatever their number, and scan
  // the whole table for them, and it does up to tens of thousands of workflows (the History in
  // benchmarks/README.md has what that cost). A range cannot be hashed or merged: each row is
  // looked up through the key, whatever the table's statistics say and whenever the prepared plan
  // was made.
  updates: {
    params: 1,
    cte: (t, type) => `upd_rows AS (
    SELECT r->>0 AS id, r->>1 AS status, r->>2 AS vars, (r->>3)::bool AS set_result, r->>4 AS result,
           (r->>5)::bool AS set_error, r->>6 AS error, (r->>7)::float8 AS started_at, (r->>8)::float8 AS completed_at
    FROM ${type}_array_elements($1::${type}) AS r),
  upd AS (
    UPDATE ${t.workflows} w SET
      status = coalesce(u.status, w.status),
      vars = coalesce(u.vars, w.vars),
      result = CASE WHEN u.set_result THEN u.result ELSE w.result END,
      error = CASE WHEN u.set_error THEN u.error ELSE w.error END,
      started_at = coalesce(to_timestamp(u.started_at / 1000.0), w.started_at),
      completed_at = coalesce(to_timestamp(u.completed_at / 1000.0), w.completed_at)
    FROM upd_rows u
    WHERE w.id >= u.id AND w.id <= u.id
    RETURNING 1),
  checked AS (
    SELECT CASE WHEN n <> wanted
      THEN ('${MISSING_ROW_MARKER}: ' || (wanted - n) || ' workflow row(s) to update do not exist')::int
      ELSE n END AS updated
    FROM (SELECT count(*)::int AS n FROM upd) c, (SELECT count(*)::int AS wanted FROM upd_rows) r)`,
  },
  timerInserts: {
    params: 3,
    cte: (t) => `ins_t AS (
    INSERT INTO ${t.timers} (workflow_id, command_id, due_at)
    SELECT w, c, to_timestamp(d / 1000.0) FROM unnest($1::text[], $2::int[], $3::float8[]) AS u(w, c, d)
    ON CONFLICT DO NOTHING)`,
  },
  // The timers of a step that creates its workflow exist only if the workflow was created.
  creatingTimerInserts: {
    params: 3,
    cte: (t) => `ins_ct AS (
    INSERT INTO ${t.timers} (workflow_id, command_id, due_at)
    SELECT w, c, to_timestamp(d / 1000.0) FROM unnest($1::text[], $2::int[], $3::float8[]) AS u(w, c, d)
    WHERE w IN (SELECT id FROM ins_wf)
    ON CONFLICT DO NOTHING)`,
  },
  timerDeletes: {
    params: 2,
    cte: (t) => `del_t AS (
    DELETE FROM ${t.timers} x USING unnest($1::text[], $2::int[]) AS u(w, c)
    WHERE x.workflow_id = u.w AND x.command_id = u.c)`,
  },
  taskUpserts: {
    params: 9,
    cte: (t) => `up_a AS (
    INSERT INTO ${t.activityTasks} (workflow_id, command_id, name, input, options, attempt, visible_at, scheduled_at, last_failure)
    SELECT w, c, n, i, o, a, to_timestamp(v / 1000.0), to_timestamp(s / 1000.0), f
    FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::int[], $7::float8[],
                $8::float8[], $9::text[]) AS u(w, c, n, i, o, a, v, s, f)
    ON CONFLICT (workflow_id, command_id) DO UPDATE SET
      attempt = excluded.attempt, visible_at = excluded.visible_at, last_failure = excluded.last_failure)`,
  },
  taskDeletes: {
    params: 2,
    cte: (t) => `del_a AS (
    DELETE FROM ${t.activityTasks} x USING unnest($1::text[], $2::int[]) AS u(w, c)
    WHERE x.workflow_id = u.w AND x.command_id = u.c)`,
  },
  // Consumed events stay (marked) for an hour: a sender's retry must find them.
  inboxConsumed: {
    params: 1,
    cte: (t) => `con_i AS (UPDATE ${t.inbox} SET consumed_at = now() WHERE id = ANY($1::bigint[]))`,
  },
  notify: {
    params: 1,
    cte: () => `note AS (SELECT pg_notify($1, 'done'))`,
  },
  // The flush's token, so a flush whose answer was lost can be told committed or not.
  commit: tokenPart(false, 'none'),
  commitWithStarts: tokenPart(true, 'none'),
  // The token, recorded only if the engine still holds each name it writes at the epoch stamped
  // on the write ($2 owner, $3 names, $4 epochs); else the cast aborts the whole statement.
  // FOR SHARE: another engine's takeover (which raises the epoch) waits for this statement to
  // commit, and one that committed first makes the row fail the epoch test here. Rows are locked
  // in byte order of their names, as claims take them, so the two cannot deadlock whatever the
  // database's collation. Riding on the token's insert, the check keeps a lone step's statement a
  // plain INSERT (no SELECT over the CTEs to read a check back).
  commitFenced: tokenPart(false, 'names'),
  commitWithStartsFenced: tokenPart(true, 'names'),
  // The same for a flush that writes workflows of one name, the usual case ($3 the name, $4 its
  // epoch): one row looked up by its key, with no arrays to unnest, join or sort, which made one
  // workflow at a time about 5% faster (benchmarks/README.md, the History).
  commitFencedOne: tokenPart(false, 'oneName'),
  commitWithStartsFencedOne: tokenPart(true, 'oneName'),
} satisfies Record<string, Part>;

type PartName = keyof typeof PARTS;
const PART_NAMES = Object.keys(PARTS) as PartName[];

/** The parts `names` as bits, one per part in PARTS order: a statement's key. */
function maskOf(names: Iterable<PartName>): number {
  let bits = 0;
  for (const name of names) bits |= 1 << PART_NAMES.indexOf(name);
  return bits;
}

const statements = new Map<string, string>();

/**
 * The whole batch as ONE statement of data-modifying CTEs: one round trip, atomic on its own
 * (no BEGIN/COMMIT), one multi-row `unnest` or JSON document per table. Its text depends only on
 * the schema, on which parts are present and on which documents go as json, so each combination
 * is a prepared statement. The CTEs share one snapshot, so no two parts may touch the same row;
 * the WAL's merge guarantees that (an insert and a delete of one timer or task in the same batch
 * cancel out before they get here).
 *
 * History rows have the primary key (workflow_id, seq): a writer whose idea of a workflow's
 * history is stale collides with the rows already there, and the statement fails as a whole.
 */
function flushStatement(t: Tables, present: readonly PartName[], asJson: ReadonlySet<PartName>, key: string): string {
  const cacheKey = `${t.schema}\0${key}`;
  let text = statements.get(cacheKey);
  if (text) return text;
  const has = (name: PartName): boolean => present.includes(name);
  // With nothing to read back (no starts, no updates to count, no notice), the last part (the
  // flush's token) is the statement itself rather than a SELECT over the CTEs: tens of µs a flush.
  const last: Part = PARTS[present.at(-1)!];
  const isAnswered = has('starts') || has('updates') || has('notify') || !last.main;
  let offset = 0;
  const clauses = present.map((name, i) => {
    const part: Part = PARTS[name];
    const base = offset;
    offset += part.params;
    const clause = !isAnswered && i === present.length - 1 ? part.main!(t) : part.cte(t, asJson.has(name) ? 'json' : 'jsonb');
    return clause.replace(/\$(\d+)/g, (_, n: string) => `$${Number(n) + base}`);
  });
  if (!isAnswered) {
    const main = clauses.pop()!;
    text = clauses.length > 0 ? `WITH ${clauses.join(',\n  ')}\n${main}` : main;
  } else {
    text = `WITH ${clauses.join(',\n  ')}
SELECT ${has('starts') ? `(SELECT coalesce(array_agg(id), '{}') FROM ins_wf)` : `'{}'::text[]`} AS inserted,
       ${has('updates') ? '(SELECT updated FROM checked)' : '0'} AS updated,
       ${has('notify') ? '(SELECT count(*) FROM note)::int' : '0'} AS notified`;
  }
  statements.set(cacheKey, text);
  return text;
}

/** How a flush identifies itself (see `committedFlush`), and what it checks. */
export type FlushOptions = {
  /** Documents (of history rows, starts, updates) longer than this go as json, not jsonb. @default MAX_JSONB_CHARS */
  maxJsonbChars?: number;
} & (
  | {
      /** Recorded with the flush in the same statement (WAL flushes; a client's start has none). */
      token?: string;
      fence?: undefined;
    }
  | {
      token: string;
      /** The leases the writes need (an engine's flushes): the check rides on the token's insert. */
      fence: FenceParams | undefined;
    }
);

/** A history row as the flush document carries it; `creates` only on a workflow's creating step. */
type DocumentRow =
  | [workflowId: string, seq: number, activation: number, type: string, commandId: number | null, payload: string | null, at: number]
  | [
      workflowId: string,
      seq: number,
      activation: number,
      type: string,
      commandId: number | null,
      payload: string | null,
      at: number,
      creates: true,
    ];

/** The parameters of each part that has something to write, and the parts whose document goes as json. */
function collectParams(
  t: Tables,
  starts: readonly NewWorkflowRow[],
  writes: readonly WorkflowWrite[],
  options: FlushOptions,
): { params: Map<PartName, unknown[]>; asJson: Set<PartName> } {
  const history: DocumentRow[] = [];
  const updates: WorkflowWrite[] = [];
  const timerInserts: { w: string; c: number; d: number }[] = [];
  const creatingTimerInserts: { w: string; c: number; d: number }[] = [];
  const timerDeletes: { w: string; c: number }[] = [];
  const taskDeletes: { w: string; c: number }[] = [];
  const tasks = writes.flatMap((w) => w.tasksUpsert);
  const inbox: number[] = [];
  // Plain starts (pending rows) and steps that create their workflow, inserted together.
  const created: { row: NewWorkflowRow; step: WorkflowWrite | undefined }[] = starts.map((row) => ({ row, step: undefined }));
  let notify = false;
  for (const w of writes) {
    if (w.creates) created.push({ row: w.creates, step: w });
    for (const r of w.history) {
      history.push(
        w.creates
          ? [w.workflowId, r.seq, r.activation, r.type, r.commandId, r.payload, r.at, true]
          : [w.workflowId, r.seq, r.activation, r.type, r.commandId, r.payload, r.at],
      );
    }
    if (!w.creates && changesRow(w)) updates.push(w);
    for (const x of w.timersInsert) {
      (w.creates ? creatingTimerInserts : timerInserts).push({ w: w.workflowId, c: x.commandId, d: x.dueAt });
    }
    // A step that creates its workflow has nothing stored to delete (what it inserted and ended
    // itself cancelled out in its write), and if the id is taken, that id's rows are another's.
    if (!w.creates) {
      for (const c of w.timersDelete) timerDeletes.push({ w: w.workflowId, c });
      for (const c of w.tasksDelete) taskDeletes.push({ w: w.workflowId, c });
    }
    for (const id of w.inboxDelete) inbox.push(id);
    notify ||= w.isTerminal;
  }
  const params = new Map<PartName, unknown[]>();
  const asJson = new Set<PartName>();
  const maxJsonbChars = options.maxJsonbChars ?? MAX_JSONB_CHARS;
  // Each as one JSON document of positional rows: JSON.stringify of arrays is native and writes no
  // keys, where text[] parameters are built and escaped element by element in JavaScript.
  const addDocument = (part: PartName, rows: unknown[]): void => {
    const document = JSON.stringify(rows);
    params.set(part, [document]);
    if (document.length > maxJsonbChars) asJson.add(part);
  };
  if (created.length > 0) {
    addDocument(
      'starts',
      created.map(({ row, step }) => [
        row.id,
        row.name,
        row.version,
        row.input ?? null,
        row.startAt,
        row.createdAt,
        row.startToken,
        step?.status ?? 'pending',
        step?.vars ?? null,
        step?.result ?? null,
        step?.error ?? null,
        step?.startedAt ?? null,
        step?.completedAt ?? null,
      ]),
    );
  }
  if (history.length > 0) addDocument(created.some((c) => c.step !== undefined) ? 'historyWithCreates' : 'history', history);
  if (updates.length > 0) {
    addDocument(
      'updates',
      updates.map((w) => [
        w.workflowId,
        w.status ?? null,
        w.vars ?? null,
        w.result !== undefined,
        w.result ?? null,
        w.error !== undefined,
        w.error ?? null,
        w.startedAt ?? null,
        w.completedAt ?? null,
      ]),
    );
  }
  if (timerInserts.length > 0) {
    params.set('timerInserts', [timerInserts.map((x) => x.w), timerInserts.map((x) => x.c), timerInserts.map((x) => x.d)]);
  }
  if (creatingTimerInserts.length > 0) {
    params.set('creatingTimerInserts', [
      creatingTimerInserts.map((x) => x.w),
      creatingTimerInserts.map((x) => x.c),
      creatingTimerInserts.map((x) => x.d),
    ]);
  }
  if (timerDeletes.length > 0) params.set('timerDeletes', [timerDeletes.map((x) => x.w), timerDeletes.map((x) => x.c)]);
  if (tasks.length > 0) {
    params.set('taskUpserts', [
      tasks.map((x) => x.workflowId),
      tasks.map((x) => x.commandId),
      tasks.map((x) => x.name),
      tasks.map((x) => x.input ?? null),
      tasks.map((x) => x.options),
      tasks.map((x) => x.attempt),
      tasks.map((x) => x.visibleAt),
      tasks.map((x) => x.scheduledAt),
      tasks.map((x) => x.lastFailure),
    ]);
  }
  if (taskDeletes.length > 0) params.set('taskDeletes', [taskDeletes.map((x) => x.w), taskDeletes.map((x) => x.c)]);
  if (inbox.length > 0) params.set('inboxConsumed', [inbox]);
  if (notify) params.set('notify', [t.channel]);
  if (options.fence && options.fence.names.length === 1) {
    const { owner, names, epochs } = options.fence;
    params.set(created.length > 0 ? 'commitWithStartsFencedOne' : 'commitFencedOne', [options.token, owner, names[0], epochs[0]]);
  } else if (options.fence && options.fence.names.length > 1) {
    const { owner, names, epochs } = options.fence;
    params.set(created.length > 0 ? 'commitWithStartsFenced' : 'commitFenced', [options.token, owner, names, epochs]);
  } else if (options.token !== undefined) {
    params.set(created.length > 0 ? 'commitWithStarts' : 'commit', [options.token]);
  }
  return { params, asJson };
}

/**
 * The workflows a flush created, if the flush with this token committed; undefined if it did not.
 * Asked after a flush's answer was lost.
 */
export async function committedFlush(db: Queryable, t: Tables, token: string): Promise<Set<string> | undefined> {
  const { rows } = await db.query<{ inserted: string[] }>(`SELECT inserted FROM ${t.walCommits} WHERE token = $1`, [
    token,
  ]);
  return rows[0] ? new Set(rows[0].inserted) : undefined;
}

/** Rows deleted per statement by `deleteExpired`. */
const EXPIRED_CHUNK = 5_000;

/**
 * Deletes the tokens of flushes, and the consumed events, older than an hour: long enough for any
 * retry of a lost answer (the WAL sends none past half an hour) or a resent event to have come and
 * gone; and the events a workflow that ended over an hour ago never took (sent while it was
 * ending, or needed no more). A backlog goes in chunks, so no single statement holds a connection
 * (the embedded database has only one) for long; `isStopped` ends it between chunks.
 */
export async function deleteExpired(db: Queryable, t: Tables, isStopped: () => boolean = () => false): Promise<void> {
  for (const expired of [
    `DELETE FROM ${t.walCommits} WHERE token IN (
       SELECT token FROM ${t.walCommits} WHERE at < now() - interval '1 hour' LIMIT ${EXPIRED_CHUNK})`,
    `DELETE FROM ${t.inbox} WHERE id IN (
       SELECT id FROM ${t.inbox} WHERE consumed_at < now() - interval '1 hour' LIMIT ${EXPIRED_CHUNK})`,
    `DELETE FROM ${t.inbox} WHERE id IN (
       SELECT i.id FROM ${t.inbox} i JOIN ${t.workflows} w ON w.id = i.workflow_id
       WHERE i.consumed_at IS NULL AND w.status IN ('completed', 'failed') AND w.completed_at < now() - interval '1 hour'
       LIMIT ${EXPIRED_CHUNK})`,
  ]) {
    for (;;) {
      if (isStopped()) return;
      const { rowCount } = await db.query(expired);
      if (rowCount < EXPIRED_CHUNK) break;
    }
  }
}

/** Commits a batch of starts and workflow writes in one statement. */
export async function flushBatch(
  db: Queryable,
  t: Tables,
  starts: readonly NewWorkflowRow[],
  writes: readonly WorkflowWrite[],
  options: FlushOptions = {},
): Promise<FlushResult> {
  const { params: byPart, asJson } = collectParams(t, starts, writes, options);
  if (byPart.size === 0) return { inserted: new Set() };
  const present = PART_NAMES.filter((name) => byPart.has(name));
  const key = asJson.size === 0 ? maskOf(present).toString(36) : `${maskOf(present).toString(36)}j${maskOf(asJson).toString(36)}`;
  const params = present.flatMap((name) => byPart.get(name)!);
  // Prepared-statement names are limited to 63 bytes: "df_" + key (at most 5) + "_" + a schema of <= 48.
  const { rows } = await db
    .query<{ inserted: string[] }>(flushStatement(t, present, asJson, key), params, `df_${key}_${t.schema}`)
    .catch((error: unknown) => {
      const missing = raisedReason(error, MISSING_ROW_MARKER);
      if (missing !== undefined) throw new MissingWorkflowRowError(missing, { cause: error });
      const leaseLost = raisedReason(error, LEASE_LOST_MARKER);
      if (leaseLost !== undefined) throw new LeaseLostError(leaseLost, { cause: error });
      throw error;
    });
  // A statement with nothing to read back returns no row: nothing was inserted.
  return { inserted: new Set(rows[0]?.inserted) };
}

/** A write named a workflow whose row does not exist (an internal error; the batch is refused). */
export class MissingWorkflowRowError extends Error {
  readonly code = 'DURAFLOW_MISSING_WORKFLOW_ROW';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MissingWorkflowRowError';
  }
}
