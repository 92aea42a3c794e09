import { describe, expect, it, vi } from 'vitest';

import type { WorkflowWrite } from '../../../storage/rows.js';
import { type Queryable, type QueryResult, type Sql, tablesFor } from '../../../storage/sql.js';
import { mergeWrite, Wal, WalClosedError } from '../../../storage/wal.js';
import { makeStartRow, makeTask, makeWrite } from '../../helpers/builders.js';
import { clockAhead } from '../../helpers/clock.js';
import { waitFor } from '../../helpers/wait-for.js';

/**
 * A driver that answers each flush from a script: the n-th flush throws `script[n]` if that is an
 * error, succeeds if 'ok', and with 'lostAnswer' commits but throws a dropped connection. Asked
 * whether a flush committed, it answers from what it committed (or, `unansweredChecks` times
 * first, throws a dropped connection). A token committed already raises the key violation the
 * database would.
 */
class ScriptedSql implements Sql {
  flushes = 0;
  /** The workflow ids of each flush's history document, in order. */
  readonly flushedWorkflows: string[][] = [];
  /** The ids each flush asked to insert as new workflows, in order. */
  readonly flushedStarts: string[][] = [];
  /** Workflow rows inserted so far: a flush inserts only ids not among them, as the table would. */
  readonly #rows = new Set<string>();
  unansweredChecks = 0;
  readonly committedTokens = new Set<string>();
  readonly #script: (Error | 'ok' | 'lostAnswer')[];

  constructor(script: (Error | 'ok' | 'lostAnswer')[]) {
    this.#script = script;
  }

  async query<Row>(text: string, params: unknown[] = []): Promise<QueryResult<Row>> {
    // The WAL's cleanup of expired rows: nothing has expired here.
    if (text.includes("interval '1 hour'")) return { rows: [], rowCount: 0 };
    if (text.includes('wal_commits WHERE token')) {
      if (this.unansweredChecks-- > 0) throw Object.assign(new Error('Connection terminated unexpectedly'), { code: 'ECONNRESET' });
      const isCommitted = this.committedTokens.has(params[0] as string);
      return { rows: isCommitted ? [{ inserted: [] } as Row] : [], rowCount: isCommitted ? 1 : 0 };
    }
    // The statement's parts come in a fixed order, each a JSON document of rows that start with
    // their workflow's id: the starts' (if any) first, then the history's.
    const hasStarts = text.includes('ins_wf AS');
    const idsIn = (document: unknown): string[] => (JSON.parse(document as string) as string[][]).map((row) => row[0]!);
    this.flushedWorkflows.push(text.includes('ins_h AS') ? [...new Set(idsIn(params[hasStarts ? 1 : 0]))] : []);
    const step = this.#script[this.flushes++] ?? 'ok';
    if (step instanceof Error) throw step;
    // The flush's token is its last parameter but one when it also cleans up, else the last.
    const token = params.findLast((p) => typeof p === 'string' && /^[0-9a-f-]{36}$/.test(p)) as string;
    if (this.committedTokens.has(token)) {
      throw Object.assign(new Error('duplicate key value violates unique constraint "wal_commits_pkey"'), {
        code: '23505',
        constraint: 'wal_commits_pkey',
      });
    }
    this.committedTokens.add(token);
    const starts = hasStarts ? idsIn(params[0]) : [];
    this.flushedStarts.push(starts);
    const inserted = starts.filter((id) => !this.#rows.has(id));
    for (const id of inserted) this.#rows.add(id);
    if (step === 'lostAnswer') throw Object.assign(new Error('Connection terminated unexpectedly'), { code: 'ECONNRESET' });
    return { rows: [{ inserted, updated: 0 } as Row], rowCount: 1 };
  }

  async exec(): Promise<void> {}

  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
    return work(this);
  }

  async listen(): Promise<() => Promise<void>> {
    return async () => undefined;
  }

  abort(): void {}
  async close(): Promise<void> {}
}

/**
 * A driver whose flush numbered `heldAt` (0 for the first to arrive) goes on only when `release()`
 * is called (`isHolding` meanwhile), then commits as a table would: a flush inserts only ids not
 * inserted yet. What each flush inserted is in `commits`, in commit order.
 */
class HeldFlushSql extends ScriptedSql {
  readonly commits: string[][] = [];
  isHolding = false;
  readonly #heldAt: number;
  #arrived = 0;
  #release!: () => void;
  readonly #released = new Promise<void>((resolve) => (this.#release = resolve));

  constructor(script: ConstructorParameters<typeof ScriptedSql>[0], heldAt = 0) {
    super(script);
    this.#heldAt = heldAt;
  }

  release(): void {
    this.#release();
  }

  override async query<Row>(text: string, params: unknown[] = []): Promise<QueryResult<Row>> {
    const isFlush = text.includes('ins_wf AS') || params.some((p) => typeof p === 'string' && p.startsWith('[['));
    if (isFlush && this.#arrived++ === this.#heldAt) {
      this.isHolding = true;
      await this.#released;
    }
    const result = await super.query<Row>(text, params);
    if (isFlush) this.commits.push([...((result.rows[0] as { inserted?: string[] } | undefined)?.inserted ?? [])]);
    return result;
  }
}

/** Lets the WAL run a few turns of the event loop (its next flush starts at the end of a turn). */
async function someTurns(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
}

function walOver(sql: Sql, maxFlushChars?: number) {
  const failures: string[][] = [];
  const observed: { error: unknown; willRetry: boolean }[] = [];
  const flushed: number[] = [];
  const wal = new Wal({
    sql,
    tables: tablesFor('unit'),
    highWaterEvents: 100,
    ...(maxFlushChars === undefined ? {} : { maxFlushChars }),
    onFlushFailed: (ids) => failures.push([...ids]),
    observer: { flushed: ({ events }) => flushed.push(events), flushFailed: (error, willRetry) => observed.push({ error, willRetry }), callbackFailed: () => undefined, cleanupFailed: () => undefined },
  });
  return { wal, failures, observed, flushed };
}

describe('mergeWrite', () => {
  it('appends history and keeps the newest row state and task of each command', () => {
    const into = makeWrite('a', 0, 2, { tasksUpsert: [makeTask('a', 1, 1)], vars: '{"x":1}', status: 'running' });
    mergeWrite(into, makeWrite('a', 2, 1, { tasksUpsert: [makeTask('a', 1, 2), makeTask('a', 3, 1)], timersDelete: [2] }));
    mergeWrite(into, makeWrite('a', 3, 1, { isTerminal: true, result: '7', completedAt: 5, error: null, startedAt: 4 }));
    expect(into.history.map((r) => r.seq)).toEqual([1, 2, 3, 4]);
    expect(into.tasksUpsert.map((t) => [t.commandId, t.attempt])).toEqual([
      [1, 2],
      [3, 1],
    ]);
    expect(into).toMatchObject({
      vars: '{"x":1}',
      status: 'running',
      result: '7',
      error: null,
      startedAt: 4,
      completedAt: 5,
      timersDelete: [2],
      isTerminal: true,
    });
  });

  it('merges a write of more rows than an argument list holds', () => {
    const into = makeWrite('a', 0, 1);
    mergeWrite(into, makeWrite('a', 1, 200_000));
    expect(into.history).toHaveLength(200_001);
    expect(into.history.at(-1)!.seq).toBe(200_001);
  });

  it('cancels a timer inserted and deleted within the batch, and drops the upsert of a deleted task', () => {
    const into = makeWrite('a', 0, 1, {
      timersInsert: [{ workflowId: 'a', commandId: 1, dueAt: 10 }],
      tasksUpsert: [makeTask('a', 2, 3)],
    });
    mergeWrite(into, makeWrite('a', 1, 1, { timersDelete: [1, 9], tasksDelete: [2, 8] }));
    expect(into.timersInsert).toEqual([]);
    expect(into.timersDelete).toEqual([9]);
    expect(into.tasksUpsert).toEqual([]);
    // The task row may exist from an earlier flush, so its delete must still reach the database.
    expect(into.tasksDelete).toEqual([2, 8]);
  });
});

describe('Wal over a scripted driver', () => {
  it('keeps a start with the creating step of its id when the limit splits the batch, so the step still wins', async () => {
    const sql = new ScriptedSql([]);
    const { wal, failures } = walOver(sql, 5_000);
    const big = makeWrite('big', 0, 1);
    big.history[0]!.payload = JSON.stringify('x'.repeat(4_900));
    wal.enqueue(big);
    const refusals: boolean[] = [];
    wal.enqueue(makeWrite('both', 0, 2, { creates: makeStartRow('both') }), (isRefused) => refusals.push(isRefused));
    const start = wal.enqueueStart(makeStartRow('both'));
    await wal.drain();
    expect(sql.flushedWorkflows).toEqual([['big'], ['both']]);
    expect(refusals).toEqual([false]);
    expect(await start).toBe(false);
    expect(failures).toEqual([]);
  });

  it('splits a batch past maxFlushChars into flushes under it, keeping each write whole and callbacks in order', async () => {
    const sql = new ScriptedSql([]);
    const { wal, failures } = walOver(sql, 5_000);
    const durable: string[] = [];
    const payload = (n: number): string => JSON.stringify('x'.repeat(n));
    // Each write's document is about 1,100 (a), 2,100 (b, c, d) and 6,100 (e) characters: a flush
    // takes writes while they fit, and one bigger than the limit goes alone.
    const sizes: [string, number][] = [['a', 1_000], ['b', 2_000], ['c', 2_000], ['d', 2_000], ['e', 6_000], ['f', 10]];
    for (const [id, size] of sizes) {
      const write = makeWrite(id, 0, 1);
      write.history[0]!.payload = payload(size);
      wal.enqueue(write, () => durable.push(id));
    }
    await wal.drain();
    expect(sql.flushedWorkflows).toEqual([['a', 'b'], ['c', 'd'], ['e'], ['f']]);
    expect(durable).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
    expect(failures).toEqual([]);
    expect(wal.pendingEvents).toBe(0);
  });

  it('counts starts and the vars, result and error of writes towards maxFlushChars, keeping starts in order, the first in the next flush', async () => {
    const sql = new ScriptedSql([]);
    const { wal, failures } = walOver(sql, 5_000);
    const bigStart = (id: string): ReturnType<typeof makeStartRow> => ({ ...makeStartRow(id), input: JSON.stringify('x'.repeat(2_000)) });
    const withVars = makeWrite('v', 0, 1, { vars: JSON.stringify({ big: 'x'.repeat(4_000) }) });
    wal.enqueue(withVars);
    const starts = ['s1', 's2', 's3', 's4', 's5'].map((id) => wal.enqueueStart(bigStart(id)));
    await wal.drain();
    expect(await Promise.all(starts)).toEqual([true, true, true, true, true]);
    // About 4,000 (v), then 2,100 a start: the first start goes with v whatever the room (writes
    // that fill every flush cannot keep it waiting), then two starts a flush.
    expect(sql.flushedWorkflows.map((ids, i) => [...ids, ...sql.flushedStarts[i]!])).toEqual([['v', 's1'], ['s2', 's3'], ['s4', 's5']]);
    expect(failures).toEqual([]);
  });

  it('keeps a start with the creating step of its id even when the start alone would overflow the flush', async () => {
    const sql = new HeldFlushSql([]);
    const { wal } = walOver(sql, 5_000);
    const refusals: boolean[] = [];
    const creating = makeWrite('both', 0, 1, { creates: makeStartRow('both') });
    creating.history[0]!.payload = JSON.stringify('x'.repeat(3_000));
    wal.enqueue(creating, (isRefused) => refusals.push(isRefused));
    const later = wal.enqueueStart({ ...makeStartRow('both'), input: JSON.stringify('y'.repeat(3_000)) });
    await someTurns();
    sql.release();
    await wal.drain();
    expect({ refusals, later: await later }).toEqual({ refusals: [false], later: false });
  });

  it('never has two starts of one id in flushes in flight at once: the first start wins', async () => {
    const sql = new HeldFlushSql([]);
    const { wal } = walOver(sql, 5_000);
    const first = wal.enqueueStart({ ...makeStartRow('dup'), input: JSON.stringify('a'.repeat(3_000)) });
    const second = wal.enqueueStart({ ...makeStartRow('dup'), input: JSON.stringify('b'.repeat(3_000)) });
    const other = wal.enqueueStart({ ...makeStartRow('other'), input: JSON.stringify('c'.repeat(3_000)) });
    await someTurns();
    sql.release();
    await wal.drain();
    expect([await first, await second, await other]).toEqual([true, false, true]);
  });

  it('holds back a write of a workflow whose last write is in flight, and sends the writes of the others at once', async () => {
    const sql = new HeldFlushSql([]);
    const { wal } = walOver(sql);
    const durable: string[] = [];
    wal.enqueue(makeWrite('w1', 0, 1), () => durable.push('w1 first'));
    await waitFor(() => sql.isHolding, 'the first flush to be in flight');
    // Appended while w1's first write is in flight: the other workflows' go in a second flush
    // now, w1's waits for the first to commit.
    wal.enqueue(makeWrite('w2', 0, 1), () => durable.push('w2'));
    wal.enqueue(makeWrite('w1', 1, 1), () => durable.push('w1 second'));
    wal.enqueue(makeWrite('w3', 0, 1), () => durable.push('w3'));
    await waitFor(() => sql.flushedWorkflows.length === 1, 'the second flush');
    expect(sql.flushedWorkflows).toEqual([['w2', 'w3']]);
    sql.release();
    await wal.drain();
    expect(sql.flushedWorkflows).toEqual([['w2', 'w3'], ['w1'], ['w1']]);
    expect(durable).toEqual(['w2', 'w3', 'w1 first', 'w1 second']);
  });

  it('reports as flushed only the history rows it wrote: none of a refused creation', async () => {
    const sql = new ScriptedSql([]);
    const { wal, flushed } = walOver(sql);
    const refusals: boolean[] = [];
    wal.enqueue(makeWrite('taken', 0, 2, { creates: makeStartRow('taken') }), (isRefused) => refusals.push(isRefused));
    await wal.drain();
    wal.enqueue(makeWrite('taken', 0, 2, { creates: makeStartRow('taken') }), (isRefused) => refusals.push(isRefused));
    wal.enqueue(makeWrite('other', 0, 3, { creates: makeStartRow('other') }), (isRefused) => refusals.push(isRefused));
    await wal.drain();
    expect(refusals).toEqual([false, true, false]);
    expect(flushed).toEqual([2, 3]);
  });

  it('commits a batch again after a transient failure, releasing it once', async () => {
    const lost = Object.assign(new Error('terminating connection'), { code: '57P01' });
    const sql = new ScriptedSql([lost, 'ok']);
    const { wal, failures, observed } = walOver(sql);
    const durable: string[] = [];
    wal.enqueue(makeWrite('a', 0, 2), () => durable.push('a'));
    await wal.drain();
    expect(sql.flushes).toBe(2);
    expect(observed).toEqual([{ error: lost, willRetry: true }]);
    expect(durable).toEqual(['a']);
    expect(failures).toEqual([]);
    expect(wal.pendingEvents).toBe(0);
  });

  it('fails a batch whose try failed for a transient reason once abandon() was called, with no try after it', async () => {
    const lost = Object.assign(new Error('terminating connection'), { code: '57P01' });
    const sql = new ScriptedSql([lost, lost, lost, 'ok']);
    const { wal, failures, observed } = walOver(sql);
    const durable: string[] = [];
    wal.enqueue(makeWrite('a', 0, 2), () => durable.push('a'));
    wal.abandon();
    expect(() => wal.enqueue(makeWrite('b', 0, 1))).toThrow(WalClosedError);
    await wal.drain();
    // Closed only, it would have had two more tries.
    expect(sql.flushes).toBe(1);
    expect(observed).toEqual([{ error: lost, willRetry: false }]);
    expect(durable).toEqual([]);
    expect(failures).toEqual([['a']]);
  });

  it('ends the backoff under way at abandon(), and fails the batch when the try after it fails', async () => {
    // The backoff's timer is fake and the clock never moves: only abandon() can end the backoff,
    // so the drain resolving at all (within the test timeout) shows that it did.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    // The shortest backoff the jitter allows (50 ms), which a moving clock would end soonest.
    const random = vi.spyOn(Math, 'random').mockReturnValue(0);
    try {
      const lost = Object.assign(new Error('terminating connection'), { code: '57P01' });
      const sql = new ScriptedSql([lost, lost, 'ok']);
      const { wal, failures, observed } = walOver(sql);
      wal.enqueue(makeWrite('a', 0, 2));
      // Turns of the event loop, not vi.waitUntil: that moves the fake clock by its interval at every
      // check, which would end this backoff before the test looks at it.
      while (observed.length === 0) await new Promise((resolve) => setImmediate(resolve));
      expect(vi.getTimerCount(), 'the backoff under way').toBe(1);
      wal.abandon();
      await wal.drain();
      expect(vi.getTimerCount(), 'a backoff left pending').toBe(0);
      expect(sql.flushes).toBe(2);
      expect(observed.map((o) => o.willRetry)).toEqual([true, false]);
      expect(failures).toEqual([['a']]);
    } finally {
      random.mockRestore();
      vi.useRealTimers();
    }
  });

  it('does not commit a batch twice when the answer to its commit was lost', async () => {
    const sql = new ScriptedSql(['lostAnswer']);
    const { wal, failures, flushed } = walOver(sql);
    const durable: string[] = [];
    wal.enqueue(makeWrite('a', 0, 2), () => durable.push('a'));
    await wal.drain();
    // One flush, then one question: did it commit? Yes: released once, never sent again, and
    // counted as the committed flush it was.
    expect(sql.flushes).toBe(1);
    expect(durable).toEqual(['a']);
    expect(failures).toEqual([]);
    expect(flushed).toEqual([2]);
  });

  it('takes its own token found taken on a retry as the earlier try having committed', async () => {
    const sql = new ScriptedSql(['lostAnswer']);
    // The checks go unanswered too: after the lost answer, and after the retry met its own token.
    sql.unansweredChecks = 2;
    const { wal, failures } = walOver(sql);
    const durable: string[] = [];
    wal.enqueue(makeWrite('a', 0, 2), () => durable.push('a'));
    await wal.drain();
    expect(durable).toEqual(['a']);
    expect(failures).toEqual([]);
    expect(sql.committedTokens.size).toBe(1);
    // The lost answer, then two retries that met their own token until a check was answered.
    expect(sql.flushes).toBe(3);
  });

  it('takes a lost answer for committed when its token is found, even once the flush is too old to be sent again', async () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    const sql = new ScriptedSql(['lostAnswer', refused]);
    // Unanswered after the lost answer and after the refused retry; answered after that.
    sql.unansweredChecks = 2;
    const { wal, failures, observed } = walOver(sql);
    // Two hours pass while the retry is refused.
    const clock = clockAhead(() => (sql.flushes >= 2 ? 2 * 3_600_000 : 0));
    const durable: string[] = [];
    try {
      wal.enqueue(makeWrite('a', 0, 2), () => durable.push('a'));
      await wal.drain();
    } finally {
      clock.restore();
    }
    // Not sent a third time: the question alone found the flush committed.
    expect(sql.flushes).toBe(2);
    expect(observed.map((o) => o.willRetry)).toEqual([true, true]);
    expect(durable).toEqual(['a']);
    expect(failures).toEqual([]);
  });

  it('hands onFlushFailed the writes it discarded, oldest first: the failed one and the one behind it, not one committed', async () => {
    const refused = Object.assign(new Error('check constraint'), { code: '23514' });
    const sql = new HeldFlushSql(['ok', refused], 1);
    const discarded: Map<string, readonly WorkflowWrite[]>[] = [];
    const wal = new Wal({
      sql,
      tables: tablesFor('unit'),
      highWaterEvents: 100,
      onFlushFailed: (_ids, _error, writes) => discarded.push(new Map(writes)),
    });
    wal.enqueue(makeWrite('a', 0, 1));
    await wal.drain();
    const failing = makeWrite('a', 1, 1);
    wal.enqueue(failing);
    await waitFor(() => sql.isHolding, 'the second flush on the wire');
    const behind = makeWrite('a', 2, 1);
    wal.enqueue(behind);
    sql.release();
    await wal.drain();
    expect(discarded).toEqual([new Map([['a', [failing, behind]]])]);
  });

  it('rejects the starts of a failed batch, with no workflow to report', async () => {
    const refused = Object.assign(new Error('check constraint'), { code: '23514' });
    const { wal, failures, observed } = walOver(new ScriptedSql([refused]));
    await expect(wal.enqueueStart(makeStartRow('a'))).rejects.toBe(refused);
    expect(observed).toEqual([{ error: refused, willRetry: false }]);
    expect(failures).toEqual([]);
  });
});
