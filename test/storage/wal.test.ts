import { beforeEach, describe, expect, it } from 'vitest';

import { PgDriver } from '../../storage/pg-driver.js';
import type { WorkflowWrite } from '../../storage/rows.js';
import { deleteExpired } from '../../storage/sql/flush-batch.js';
import { insertEvent } from '../../storage/sql/inbox.js';
import type { Queryable, Sql, Tables } from '../../storage/sql.js';
import { Wal, WalClosedError, type WalOptions } from '../../storage/wal.js';
import { backends, serverBackends, type TestSchema } from '../helpers/database.js';
import { makeStartRow, makeTask, makeWrite } from '../helpers/builders.js';
import { clockAhead } from '../helpers/clock.js';
import { useStore } from '../helpers/storage.js';

/** JSON values with everything awkward to carry: escapes, lone surrogates, NUL, bare values. */
const AWKWARD_VALUES: unknown[] = [
  { quote: '"', backslash: '\\', slashU: '\\u0041', tab: '\t', newline: '\n' },
  { loneHigh: 'a\ud800b', loneLow: '\udc00', pair: '😀', nul: 'x\u0000y', control: '\u0001\u001f' },
  { accented: 'é', cjk: '漢字', rtl: '\u202e', bom: '\ufeff' },
  { many: Array.from({ length: 100 }, (_, i) => ({ i })) },
  [1.5e300, -0, null, true, ''],
  'just a string',
];

/** JSON texts (and null) that must come back from the database as they went in. */
const AWKWARD_PAYLOADS: (string | null)[] = [
  ...AWKWARD_VALUES.map((v) => JSON.stringify(v)),
  null,
  'null',
  '"a\\/b"',
  '{ "spaced" :  1 }',
  ' {"a":1} ',
  '{"a" : 1}\n',
  // Nested deeper than Postgres takes a json value apart (and than JSON.stringify here could write).
  `{"deep":${'['.repeat(50_000)}1${']'.repeat(50_000)}}`,
];

/** The two ways a flush carries its rows' documents: what the WAL is given, and what the statement then reads. */
const DOCUMENT_TYPES = [
  ['jsonb', 'jsonb_array_elements(', {}],
  ['json (a document too big for jsonb)', 'json_array_elements(', { maxJsonbChars: 0 }],
] as const;

/** One turn of the event loop: the WAL starts a flush at the end of the turn it was appended in. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * The driver with every statement and transaction held back while `hold()` is in force, so a test
 * can append while a batch is provably in flight, and with every commit logged.
 */
function controlled(inner: Sql) {
  const log: string[] = [];
  let gate: Promise<void> | undefined;
  const sql: Sql = {
    async query<Row>(...args: Parameters<Sql['query']>) {
      if (gate) await gate;
      const result = await inner.query<Row>(...args);
      // The background cleanup of expired rows is not a flush.
      if (!args[0].includes("interval '1 hour'")) log.push('commit');
      return result;
    },
    exec: (script: string) => inner.exec(script),
    async transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
      if (gate) await gate;
      const value = await inner.transaction(work);
      log.push('commit');
      return value;
    },
    listen: (channel, onPayload) => inner.listen(channel, onPayload),
    abort: () => inner.abort(),
    close: () => inner.close(),
  };
  return {
    sql,
    log,
    /** Holds every statement until the returned function is called. */
    hold(): () => void {
      let release!: () => void;
      gate = new Promise((resolve) => (release = resolve));
      return () => {
        gate = undefined;
        release();
      };
    },
  };
}

/**
 * The driver with a lost answer on demand: after `loseNextFlush()`, the next flush commits, its
 * answer is lost, and the database is away (every statement fails as refused) until `up()`.
 * `resent` counts the flushes carrying the lost flush's token that reached the database since.
 */
function losingAnswers(inner: Sql, tables: Tables) {
  let isLosing = false;
  let isDown = false;
  let lostToken: string | undefined;
  let onLost!: () => void;
  const link = {
    resent: 0,
    /** Resolves once the flush has committed and its answer is lost. */
    lost: new Promise<void>((resolve) => (onLost = resolve)),
    loseNextFlush(): void {
      isLosing = true;
    },
    up(): void {
      isDown = false;
    },
    sql: {
      ...inner,
      async query<Row>(...args: Parameters<Sql['query']>) {
        const [text, params = []] = args;
        if (isDown) throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
        const isFlush = text.includes(`INSERT INTO ${tables.walCommits}`);
        if (isFlush && lostToken !== undefined && params.includes(lostToken)) link.resent++;
        const result = await inner.query<Row>(...args);
        if (isFlush && isLosing) {
          isLosing = false;
          isDown = true;
          // The flush's token is its first string parameter that looks like one.
          lostToken = params.find((p) => typeof p === 'string' && /^[0-9a-f-]{36}$/.test(p)) as string;
          onLost();
          throw Object.assign(new Error('Connection terminated unexpectedly'), { code: 'ECONNRESET' });
        }
        return result;
      },
    } satisfies Sql,
  };
  return link;
}

describe.each(backends)('Wal on $name', (backend) => {
  let db: TestSchema;
  let sql: Sql;
  let tables: Tables;

  const store = useStore(backend);
  beforeEach(() => {
    ({ db, sql, tables } = store());
  });

  function open(options: Partial<WalOptions> = {}) {
    const failures: { ids: string[]; error: unknown }[] = [];
    const flushes: { events: number; writes: number; starts: number }[] = [];
    const wal = new Wal({
      sql,
      tables,
      highWaterEvents: 10_000,
      onFlushFailed: (ids, error) => failures.push({ ids: [...ids].sort(), error }),
      observer: {
        flushed: ({ events, writes, starts }) => flushes.push({ events, writes, starts }),
        flushFailed: () => undefined,
        callbackFailed: () => undefined,
        cleanupFailed: () => undefined,
      },
      ...options,
    });
    return { wal, failures, flushes };
  }

  async function start(wal: Wal, ...ids: string[]): Promise<void> {
    expect(await Promise.all(ids.map((id) => wal.enqueueStart(makeStartRow(id))))).toEqual(ids.map(() => true));
  }

  /** Appends one history row per payload to a started workflow and reads back what was stored. */
  async function storedPayloads(wal: Wal, workflowId: string, payloads: (string | null)[]): Promise<(string | null)[]> {
    const write = makeWrite(workflowId, 0, payloads.length);
    payloads.forEach((payload, i) => (write.history[i]!.payload = payload));
    wal.enqueue(write);
    await wal.drain();
    const rows = await db.query<{ payload: string | null }>(
      `SELECT payload FROM "${db.schema}".history WHERE workflow_id = $1 ORDER BY seq`,
      [workflowId],
    );
    return rows.map((r) => r.payload);
  }

  async function historyOf(workflowId: string): Promise<number[]> {
    const rows = await db.query<{ seq: number }>(
      `SELECT seq FROM "${db.schema}".history WHERE workflow_id = $1 ORDER BY seq`,
      [workflowId],
    );
    return rows.map((r) => r.seq);
  }

  it('creates workflows and reports a taken id as not inserted', async () => {
    const { wal } = open();
    expect(await wal.enqueueStart(makeStartRow('w1'))).toBe(true);
    expect(await wal.enqueueStart(makeStartRow('w1'))).toBe(false);
    const rows = await db.query(`SELECT id, status, input FROM "${db.schema}".workflows`);
    expect(rows).toEqual([{ id: 'w1', status: 'pending', input: '{"n":1}' }]);
  });

  it('group-commits everything appended in one turn in one transaction', async () => {
    const { wal, flushes } = open();
    const ids = Array.from({ length: 20 }, (_, i) => `w${i}`);
    await start(wal, ...ids);
    expect(flushes).toEqual([{ events: 0, writes: 0, starts: 20 }]);

    const durable: string[] = [];
    for (const id of ids) wal.enqueue(makeWrite(id, 0, 3, { status: 'running' }), () => durable.push(id));
    expect(wal.pendingEvents).toBe(60);
    await wal.drain();

    expect(durable).toEqual(ids);
    expect(flushes[1]).toEqual({ events: 60, writes: 20, starts: 0 });
    const [counted] = await db.query<{ transactions: number; rows: number }>(
      `SELECT count(DISTINCT xmin::text)::int AS transactions, count(*)::int AS rows FROM "${db.schema}".history`,
    );
    expect(counted).toEqual({ transactions: 1, rows: 60 });
    expect(await db.query(`SELECT DISTINCT status FROM "${db.schema}".workflows`)).toEqual([{ status: 'running' }]);
    expect(wal.pendingEvents).toBe(0);
  });

  /** The driver with every statement the WAL sends recorded, to see how each part was carried. */
  function recordingSql(): { recording: Sql; statements: string[] } {
    const statements: string[] = [];
    return { recording: { ...sql, query: (text, ...rest) => (statements.push(text), sql.query(text, ...rest)) }, statements };
  }

  it.each(DOCUMENT_TYPES)('stores every history payload byte for byte, sent as %s: escapes, lone surrogates, NUL, bare values and deep nesting included', async (_, reader, options) => {
    // The statements the WAL sends, so the test sees which document type carried the history.
    const { recording, statements } = recordingSql();
    const { wal, failures } = open({ ...options, sql: recording });
    await start(wal, 'p');
    expect(await storedPayloads(wal, 'p', AWKWARD_PAYLOADS)).toEqual(AWKWARD_PAYLOADS);
    expect(failures).toEqual([]);
    expect(statements.some((text) => text.includes(reader))).toBe(true);
  });

  it.each(DOCUMENT_TYPES)('stores every input, variables document, result and error byte for byte, sent as %s', async (_, reader, options) => {
    const { recording, statements } = recordingSql();
    const { wal, failures } = open({ ...options, sql: recording });
    const texts = AWKWARD_PAYLOADS.filter((p) => p !== null);
    // A plain start (its input), then a step that updates the row; and a step that creates its
    // workflow, which carries both in the start's row.
    const started = texts.map((text, i) => wal.enqueueStart({ ...makeStartRow(`in-${i}`), input: text }));
    expect(await Promise.all(started)).toEqual(texts.map(() => true));
    texts.forEach((text, i) => {
      wal.enqueue(makeWrite(`in-${i}`, 0, 1, { status: 'completed', vars: text, result: text, error: text }));
      wal.enqueue(
        makeWrite(`new-${i}`, 0, 1, {
          creates: { ...makeStartRow(`new-${i}`), input: text },
          status: 'failed',
          vars: text,
          result: text,
          error: text,
        }),
      );
    });
    await wal.drain();
    expect(failures).toEqual([]);
    const rows = await db.query<{ id: string; input: string; vars: string; result: string; error: string; status: string }>(
      `SELECT id, input, vars, result, error, status FROM "${db.schema}".workflows ORDER BY id`,
    );
    const expected = texts.flatMap((text, i) => [
      { id: `in-${i}`, input: text, vars: text, result: text, error: text, status: 'completed' },
      { id: `new-${i}`, input: text, vars: text, result: text, error: text, status: 'failed' },
    ]);
    expect(rows).toEqual(expected.sort((a, b) => (a.id < b.id ? -1 : 1)));
    expect(statements.filter((text) => text.includes('ins_wf AS') || text.includes('upd AS')).every((text) => text.includes(reader))).toBe(true);
  });

  it.each([
    ['jsonb', {}],
    ['json (a document too big for jsonb)', { maxJsonbChars: 0 }],
  ] as const)('stores awkward workflow ids, names and versions and fractional or far times exactly, sent as %s', async (_, options) => {
    const { wal, failures } = open(options);
    // Each passes checkName; each is something JSON escapes, or UTF-8 writes in 2, 3 or 4 bytes.
    const names = ['q"uote', 'back\\slash', 'line\u2028sep\u2029', 'emoji 😀', 'math 𝔘𝔫𝔦', 'ctl\u0001\u001f\u007f', "it's", 'tab\tnl\n', 'é漢字'];
    const now = Date.now();
    // Times the engine lets through: now or later, fractional, up to the end of Date's range.
    const times = [now + 0.25, now + 0.5, 8.64e15, now + 1_000.125];
    const startedAt = [1_000.5, 8.64e15];
    const rowOf = (id: string, i: number) => ({
      ...makeStartRow(id),
      name: names[(i + 1) % names.length]!,
      version: names[(i + 2) % names.length]!,
      startAt: times[i % times.length]!,
      createdAt: times[(i + 1) % times.length]!,
      // No input (SQL NULL) and an input of JSON null (the text null) must stay apart.
      input: i % 2 === 0 ? undefined : 'null',
    });
    expect(await Promise.all(names.map((id, i) => wal.enqueueStart(rowOf(id, i))))).toEqual(names.map(() => true));
    names.forEach((id, i) => {
      wal.enqueue(makeWrite(id, 0, 1, { status: 'completed', startedAt: startedAt[i % 2]!, completedAt: startedAt[(i + 1) % 2]! }));
      wal.enqueue(makeWrite(`new ${id}`, 0, 1, { creates: rowOf(`new ${id}`, i), status: 'running', startedAt: startedAt[i % 2]! }));
    });
    await wal.drain();
    expect(failures).toEqual([]);
    const rows = await db.query<{ id: string }>(
      `SELECT id, name, version, status, input, vars,
              (extract(epoch FROM start_at) * 1000)::float8 AS "startAt", (extract(epoch FROM created_at) * 1000)::float8 AS "createdAt",
              (extract(epoch FROM started_at) * 1000)::float8 AS "startedAt", (extract(epoch FROM completed_at) * 1000)::float8 AS "completedAt"
       FROM "${db.schema}".workflows`,
    );
    const expected = names.flatMap((id, i) => {
      const { name, version, input = null, startAt, createdAt } = rowOf(id, i);
      const at = { startAt, createdAt, startedAt: startedAt[i % 2] };
      return [
        { id, name, version, status: 'completed', input, vars: '{}', ...at, completedAt: startedAt[(i + 1) % 2] },
        { id: `new ${id}`, name, version, status: 'running', input, vars: '{}', ...at, completedAt: null },
      ];
    });
    const byId = (a: { id: string }, b: { id: string }) => (a.id < b.id ? -1 : 1);
    expect(rows.sort(byId)).toEqual(expected.sort(byId));
    const history = await db.query<{ workflow_id: string }>(`SELECT workflow_id FROM "${db.schema}".history`);
    expect(history.map((r) => r.workflow_id).sort()).toEqual(expected.map((r) => r.id).sort());
  });

  it('sends as json only the documents over maxJsonbChars, and each mix of document types as a statement of its own', async () => {
    const { recording, statements } = recordingSql();
    const { wal, failures } = open({ maxJsonbChars: 1_000, sql: recording });
    const long = JSON.stringify('"'.repeat(600));
    const readers = (text: string) => [...text.matchAll(/(\w+)_array_elements\(/g)].map((m) => m[1]);
    // The same parts each time (a start, a step creating its workflow, a step updating a row), with
    // the long value in a different one: one flush each.
    await start(wal, 'a', 'b', 'c');
    statements.length = 0;
    const flushes: [starts: string, history: string, updates: string][] = [
      [long, '1', '1'],
      ['1', long, '1'],
      ['1', '1', long],
      ['1', '1', '1'],
    ];
    for (const [i, [input, payload, result]] of flushes.entries()) {
      const write = makeWrite(`new-${i}`, 0, 1, { creates: { ...makeStartRow(`new-${i}`), input }, status: 'running' });
      write.history[0]!.payload = payload;
      wal.enqueue(write);
      wal.enqueue(makeWrite(['a', 'b', 'c', 'a'][i]!, i === 3 ? 1 : 0, 1, { status: 'running', result }));
      await wal.drain();
    }
    expect(failures).toEqual([]);
    expect(statements.filter((text) => text.includes('ins_wf AS')).map(readers)).toEqual([
      ['json', 'jsonb', 'jsonb'],
      ['jsonb', 'json', 'jsonb'],
      ['jsonb', 'jsonb', 'json'],
      ['jsonb', 'jsonb', 'jsonb'],
    ]);
    const rows = await db.query(`SELECT id, input, result FROM "${db.schema}".workflows WHERE id <> 'c' ORDER BY id`);
    expect(rows).toEqual([
      { id: 'a', input: '{"n":1}', result: '1' },
      { id: 'b', input: '{"n":1}', result: '1' },
      { id: 'new-0', input: long, result: null },
      { id: 'new-1', input: '1', result: null },
      { id: 'new-2', input: '1', result: null },
      { id: 'new-3', input: '1', result: null },
    ]);
    expect(await db.query(`SELECT result FROM "${db.schema}".workflows WHERE id = 'c'`)).toEqual([{ result: long }]);
    const [history] = await db.query(`SELECT payload FROM "${db.schema}".history WHERE workflow_id = 'new-1'`);
    expect(history).toEqual({ payload: long });
  });

  it('merges two writes of one workflow into one flush', async () => {
    const { wal, flushes } = open();
    await start(wal, 'a');
    const stored = await insertEvent(sql, tables, 'a', 'go', '1', 'event-1');
    if (stored.outcome !== 'stored') throw new Error(`event not stored: ${stored.outcome}`);
    const inboxId = stored.id;
    wal.enqueue(
      makeWrite('a', 0, 2, {
        status: 'running',
        startedAt: 1_000,
        tasksUpsert: [makeTask('a', 1, 1)],
        timersInsert: [
          { workflowId: 'a', commandId: 2, dueAt: 9_000 },
          { workflowId: 'a', commandId: 3, dueAt: 9_000 },
        ],
      }),
    );
    wal.enqueue(
      makeWrite('a', 2, 3, {
        vars: '{"v":2}',
        tasksUpsert: [makeTask('a', 1, 2)],
        timersDelete: [2],
        inboxDelete: [inboxId],
      }),
    );
    await wal.drain();

    expect(flushes.at(-1)).toEqual({ events: 5, writes: 1, starts: 0 });
    expect(await historyOf('a')).toEqual([1, 2, 3, 4, 5]);
    const [row] = await db.query(`SELECT status, vars FROM "${db.schema}".workflows WHERE id = 'a'`);
    expect(row).toEqual({ status: 'running', vars: '{"v":2}' });
    // Both upserts of command 1 became one row at its newest attempt (one INSERT may not touch a row twice).
    expect(await db.query(`SELECT command_id, attempt FROM "${db.schema}".activity_tasks`)).toEqual([
      { command_id: 1, attempt: 2 },
    ]);
    expect(await db.query(`SELECT command_id FROM "${db.schema}".timers`)).toEqual([{ command_id: 3 }]);
    // Consumed: kept for an hour (a sender's retry must find it), no longer waiting.
    expect(await db.query(`SELECT id FROM "${db.schema}".inbox WHERE consumed_at IS NULL`)).toEqual([]);
  });

  it('runs durable callbacks in append order, only after the commit', async () => {
    const ctl = controlled(sql);
    const { wal } = open({ sql: ctl.sql });
    await start(wal, 'a', 'b');
    const log = ctl.log;
    log.length = 0;

    const release = ctl.hold();
    wal.enqueue(makeWrite('a', 0, 1), () => log.push('a1'));
    wal.enqueue(makeWrite('b', 0, 1), () => log.push('b1'));
    wal.enqueue(makeWrite('a', 1, 1), () => log.push('a2'));
    wal.enqueue(makeWrite('b', 1, 1));
    await nextTurn();
    expect(wal.isFlushing).toBe(true);
    wal.enqueue(makeWrite('a', 2, 1), () => log.push('a3'));
    expect(log).toEqual([]);
    release();
    await wal.drain();
    expect(log).toEqual(['commit', 'a1', 'b1', 'a2', 'commit', 'a3']);
    expect(await historyOf('a')).toEqual([1, 2, 3]);
  });

  it('discards a failed batch and the later writes of its workflows, and names them', async () => {
    const ctl = controlled(sql);
    const { wal, failures } = open({ sql: ctl.sql });
    await start(wal, 'a', 'b', 'c');
    wal.enqueue(makeWrite('a', 0, 1));
    await wal.drain();
    const durable: string[] = [];
    const release = ctl.hold();

    // A writer with a stale view of a: seq 1 is stored already.
    wal.enqueue(makeWrite('a', 0, 1), () => durable.push('a-stale'));
    wal.enqueue(makeWrite('b', 0, 1), () => durable.push('b1'));
    const lateStart = wal.enqueueStart(makeStartRow('d')).then(
      () => 'committed',
      (error: unknown) => error,
    );
    await nextTurn();
    expect(wal.isFlushing).toBe(true);
    wal.enqueue(makeWrite('a', 1, 1), () => durable.push('a2'));
    wal.enqueue(makeWrite('b', 1, 1), () => durable.push('b2'));
    wal.enqueue(makeWrite('c', 0, 2), () => durable.push('c1'));
    expect(wal.pendingEvents).toBe(6);
    release();

    // The start had nothing to do with the stale write: it goes again, in a flush of its own.
    expect(await lateStart).toBe('committed');
    await wal.drain();

    expect(failures).toHaveLength(1);
    expect(failures[0]!.ids).toEqual(['a', 'b']);
    expect(failures[0]!.error).toMatchObject({ code: '23505' });
    expect(durable).toEqual(['c1']);
    expect(await historyOf('a')).toEqual([1]);
    expect(await historyOf('b')).toEqual([]);
    expect(await historyOf('c')).toEqual([1, 2]);
    expect(await db.query(`SELECT id FROM "${db.schema}".workflows WHERE id = 'd'`)).toEqual([{ id: 'd' }]);
    expect(wal.pendingEvents).toBe(0);
  });

  it('tries a start again once when a write beside it fails its flush for good, and fails it after a second such flush', async () => {
    const failed: string[][] = [];
    // No row for either ghost: each flush that carries one fails for good. The second is written
    // as the first fails, so it meets the start again in the next flush.
    const { wal } = open({
      onFlushFailed: (ids) => {
        failed.push([...ids]);
        if (ids.has('ghost')) wal.enqueue(makeWrite('ghost2', 0, 1, { status: 'running' }));
      },
    });
    wal.enqueue(makeWrite('ghost', 0, 1, { status: 'running' }));
    const started = wal.enqueueStart(makeStartRow('e')).then(
      () => 'committed',
      (error: unknown) => error,
    );
    expect(await started).toMatchObject({ code: 'DURAFLOW_MISSING_WORKFLOW_ROW' });
    await wal.drain();
    expect(failed).toEqual([['ghost'], ['ghost2']]);
    expect(await db.query(`SELECT id FROM "${db.schema}".workflows WHERE id = 'e'`)).toEqual([]);
  });

  it('refuses a batch that updates a workflow row that does not exist, writing nothing of it', async () => {
    const { wal, failures } = open();
    await start(wal, 'a');
    const durable: string[] = [];
    wal.enqueue(makeWrite('ghost', 0, 1, { status: 'running' }), () => durable.push('ghost'));
    wal.enqueue(makeWrite('a', 0, 1), () => durable.push('a'));
    await wal.drain();
    expect(durable).toEqual([]);
    expect(failures).toHaveLength(1);
    expect(failures[0]!.ids.sort()).toEqual(['a', 'ghost']);
    expect(failures[0]!.error).toMatchObject({ code: 'DURAFLOW_MISSING_WORKFLOW_ROW' });
    expect(await historyOf('a')).toEqual([]);
    expect(await historyOf('ghost')).toEqual([]);
  });

  it('reports the second of two starts of one id in one batch as taken, and stores the first', async () => {
    const { wal } = open();
    const first = wal.enqueueStart({ ...makeStartRow('twice'), input: '"first"' });
    const second = wal.enqueueStart({ ...makeStartRow('twice'), input: '"second"' });
    expect(await Promise.all([first, second])).toEqual([true, false]);
    expect(await db.query(`SELECT input FROM "${db.schema}".workflows`)).toEqual([{ input: '"first"' }]);
  });

  it('lets a step that creates its workflow win over a start of the same id in its batch', async () => {
    const { wal, failures } = open();
    await start(wal, 'other');
    const refusals: boolean[] = [];
    wal.enqueue(makeWrite('both', 0, 2, { status: 'running', creates: makeStartRow('both') }), (isRefused) => refusals.push(isRefused));
    const plainStart = wal.enqueueStart(makeStartRow('both'));
    wal.enqueue(makeWrite('other', 0, 1), (isRefused) => refusals.push(isRefused));
    expect(await plainStart).toBe(false);
    await wal.drain();
    expect(failures).toEqual([]);
    expect(refusals).toEqual([false, false]);
    expect(await historyOf('both')).toEqual([1, 2]);
    expect(await historyOf('other')).toEqual([1]);
  });

  it('discards the later writes of a workflow whose creating step found its id taken', async () => {
    const ctl = controlled(sql);
    const { wal, failures } = open({ sql: ctl.sql });
    await start(wal, 'taken');
    const outcomes: string[] = [];
    const release = ctl.hold();
    wal.enqueue(makeWrite('taken', 0, 1, { status: 'running', creates: makeStartRow('taken') }), (isRefused) =>
      outcomes.push(isRefused ? 'refused' : 'created'),
    );
    await nextTurn();
    expect(wal.isFlushing).toBe(true);
    // The impostor's next step, appended while its creation is in flight.
    wal.enqueue(makeWrite('taken', 1, 1, { status: 'completed', vars: '{"mine":1}' }), () => outcomes.push('second step'));
    release();
    await wal.drain();
    expect(outcomes).toEqual(['refused']);
    expect(failures).toEqual([]);
    expect(await historyOf('taken')).toEqual([]);
    expect(await db.query(`SELECT status, vars FROM "${db.schema}".workflows`)).toEqual([{ status: 'pending', vars: '{}' }]);
  });

  it('keeps a batch committed, and runs the other callbacks, when one callback throws', async () => {
    const callbackErrors: unknown[] = [];
    const { wal, failures } = open({
      observer: {
        flushed: () => undefined,
        flushFailed: () => undefined,
        callbackFailed: (error) => callbackErrors.push(error),
        cleanupFailed: () => undefined,
      },
    });
    await start(wal, 'a', 'b');
    const durable: string[] = [];
    wal.enqueue(makeWrite('a', 0, 1), () => {
      throw new Error('release failed');
    });
    wal.enqueue(makeWrite('b', 0, 1), () => durable.push('b'));
    await wal.drain();
    expect(durable).toEqual(['b']);
    expect(callbackErrors).toHaveLength(1);
    expect(failures).toEqual([]);
    wal.enqueue(makeWrite('a', 1, 1), () => durable.push('a2'));
    await wal.drain();
    expect(durable).toEqual(['b', 'a2']);
    expect(await historyOf('a')).toEqual([1, 2]);
  });

  it('goes on flushing when the owner, told of a failed flush, throws, and so does every observer', async () => {
    const throws = (): never => {
      throw new Error('the logger is broken');
    };
    const { wal } = open({
      onFlushFailed: throws,
      observer: { flushed: throws, flushFailed: throws, callbackFailed: throws, cleanupFailed: throws },
    });
    await start(wal, 'a');
    const durable: string[] = [];
    // No row for ghost: the flush fails for good, and everything told of it throws.
    wal.enqueue(makeWrite('ghost', 0, 1, { status: 'running' }), () => durable.push('ghost'));
    await wal.drain();
    expect(wal.isFlushing).toBe(false);
    wal.enqueue(makeWrite('a', 0, 1), () => durable.push('a'));
    await wal.drain();
    expect(durable).toEqual(['a']);
    expect(await historyOf('a')).toEqual([1]);
    await wal.close();
  }, 10_000);

  it.each([
    ['a step with history rows', () => makeWrite('a', 0, 2), [1, 2], []],
    ['a step that only stores a retry', () => makeWrite('a', 0, 0, { tasksUpsert: [makeTask('a', 1, 2)] }), [], [{ command_id: 1, attempt: 2 }]],
  ] as [string, () => WorkflowWrite, number[], unknown[]][])(
    'gives up, without sending it again, a flush whose lost answer is still unknown once its token may have expired: %s',
    async (_, write, history, tasks) => {
      const link = losingAnswers(sql, tables);
      const { wal, failures } = open({ sql: link.sql });
      await start(wal, 'a');
      const durable: string[] = [];
      link.loseNextFlush();
      wal.enqueue(write(), () => durable.push('a'));
      const started = wal.enqueueStart(makeStartRow('s'));
      await link.lost;
      // The database stays away past the hour its tokens are kept: another engine's cleanup
      // deletes the token of the flush that committed.
      await db.query(`UPDATE "${db.schema}".wal_commits SET at = at - interval '2 hours'`);
      await deleteExpired(sql, tables);
      expect(await db.query(`SELECT token FROM "${db.schema}".wal_commits`)).toEqual([]);
      const clock = clockAhead(2 * 3_600_000);
      try {
        link.up();
        // The start beside the write finds its own row by its token.
        expect(await started).toBe(true);
        await wal.drain();
      } finally {
        clock.restore();
      }
      expect(link.resent).toBe(0);
      expect(failures).toEqual([{ ids: ['a'], error: expect.objectContaining({ code: 'DURAFLOW_FLUSH_OUTCOME_UNKNOWN' }) }]);
      expect(durable).toEqual([]);
      expect(await historyOf('a')).toEqual(history);
      expect(await db.query(`SELECT command_id, attempt FROM "${db.schema}".activity_tasks`)).toEqual(tasks);
      expect(await db.query(`SELECT id FROM "${db.schema}".workflows ORDER BY id`)).toEqual([{ id: 'a' }, { id: 's' }]);
    },
  );

  it('refuses appends as soon as close() is called, and still commits what came before', async () => {
    const { wal } = open();
    await start(wal, 'a');
    const durable: string[] = [];
    wal.enqueue(makeWrite('a', 0, 1), () => durable.push('before'));
    const closing = wal.close();
    expect(() => wal.enqueue(makeWrite('a', 1, 1))).toThrow(WalClosedError);
    await closing;
    expect(durable).toEqual(['before']);
    expect(wal.pendingEvents).toBe(0);
    expect(await historyOf('a')).toEqual([1]);
  });

  it('drain() resolves at once when idle and otherwise after everything appended committed', async () => {
    const ctl = controlled(sql);
    const { wal } = open({ sql: ctl.sql });
    await wal.drain();
    await start(wal, 'a');
    const durable: number[] = [];
    const release = ctl.hold();
    wal.enqueue(makeWrite('a', 0, 1), () => durable.push(1));
    await nextTurn();
    wal.enqueue(makeWrite('a', 1, 1), () => durable.push(2));
    const drained = wal.drain();
    expect(wal.isFlushing).toBe(true);
    release();
    await drained;
    expect(durable).toEqual([1, 2]);
    expect(wal.isFlushing).toBe(false);
  });

  it('close() commits what is pending, then refuses appends with WalClosedError', async () => {
    const { wal } = open();
    await start(wal, 'a');
    const durable: string[] = [];
    wal.enqueue(makeWrite('a', 0, 2), () => durable.push('a1'));
    await wal.close();
    expect(durable).toEqual(['a1']);
    expect(await historyOf('a')).toEqual([1, 2]);

    let thrown: unknown;
    try {
      wal.enqueue(makeWrite('a', 2, 1));
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(WalClosedError);
    expect((thrown as WalClosedError).code).toBe('DURAFLOW_WAL_CLOSED');
    await expect(wal.enqueueStart(makeStartRow('z'))).rejects.toBeInstanceOf(WalClosedError);
    expect(await historyOf('a')).toEqual([1, 2]);
  });

  it('reports congestion above the high-water mark until a flush brings it down', async () => {
    const ctl = controlled(sql);
    const { wal } = open({ sql: ctl.sql, highWaterEvents: 2 });
    await start(wal, 'a', 'b');
    await wal.whenUncongested();
    const release = ctl.hold();
    wal.enqueue(makeWrite('a', 0, 2));
    expect(wal.isCongested).toBe(false);
    wal.enqueue(makeWrite('b', 0, 1));
    expect(wal.pendingEvents).toBe(3);
    expect(wal.isCongested).toBe(true);
    let uncongested = false;
    const waiting = wal.whenUncongested().then(() => (uncongested = true));
    await nextTurn();
    // In flight still counts: the rows are not durable yet.
    expect(wal.isFlushing).toBe(true);
    expect(wal.isCongested).toBe(true);
    expect(uncongested).toBe(false);
    release();
    await waiting;
    expect(wal.isCongested).toBe(false);
    expect(wal.pendingEvents).toBe(0);
    expect(await historyOf('b')).toEqual([1]);
  });

  it('notifies waiting clients when a write ends a workflow', async () => {
    const { wal } = open();
    await start(wal, 'a');
    let notified!: (payload: string) => void;
    const notice = new Promise<string>((resolve) => (notified = resolve));
    const unlisten = await sql.listen(tables.channel, (payload) => notified(payload));
    try {
      wal.enqueue(makeWrite('a', 0, 1, { status: 'completed', result: '42', completedAt: 2_000, isTerminal: true }));
      await wal.drain();
      expect(await notice).toBe('done');
      const [row] = await db.query(`SELECT status, result FROM "${db.schema}".workflows WHERE id = 'a'`);
      expect(row).toEqual({ status: 'completed', result: '42' });
    } finally {
      await unlisten();
    }
  });
});

describe.each(serverBackends)('Wal on $name at the lowest max_stack_depth', (backend) => {
  const store = useStore(backend);

  it('stores a 2 KB payload nested 1,000 levels deep when the server allows the least stack', async () => {
    const { db, tables } = store();
    const url = new URL(db.database as string);
    url.searchParams.set('options', '-c max_stack_depth=100kB');
    const sql = new PgDriver({ connectionString: url.href, maxConnections: 2, onError() {} });
    const failures: unknown[] = [];
    const wal = new Wal({ sql, tables, highWaterEvents: 1_000, onFlushFailed: (_, error) => failures.push(error) });
    try {
      expect(await wal.enqueueStart(makeStartRow('nested'))).toBe(true);
      // 2,047 characters, 1,000 levels: more than Postgres takes apart with a 100 kB stack.
      const nested = `{"a":${'['.repeat(1_000)}1${']'.repeat(1_000)}}`;
      const write = makeWrite('nested', 0, 1);
      write.history[0]!.payload = nested;
      wal.enqueue(write);
      await wal.drain();
      expect(failures).toEqual([]);
      const rows = await db.query<{ payload: string }>(`SELECT payload FROM "${db.schema}".history WHERE workflow_id = 'nested'`);
      expect(rows).toEqual([{ payload: nested }]);
    } finally {
      await wal.close();
      await sql.close();
    }
  });
});
