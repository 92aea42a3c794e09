import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { emptyWrite, type WorkflowWrite } from '../../storage/rows.js';
import { type Queryable, type QueryResult, type Sql, tablesFor } from '../../storage/sql.js';
import { Wal } from '../../storage/wal.js';

const tables = tablesFor('prop');
const TAG = 'tag:';

/** How the fake database ends one transaction. */
type Outcome = 'commit' | 'failBeforeWork' | 'failAtCommit';

/** Not retryable (a unique violation), so every failure takes the WAL's discard path. */
function constraintViolation(): Error {
  return Object.assign(new Error('duplicate key value violates unique constraint'), { code: '23505' });
}

/**
 * A database that keeps only the history rows of the flushes it commits, and fails the flushes the
 * test chose, either before doing anything or at the very end. Each history row's payload is a
 * tag naming the append it came from; the fake finds them among the statement's parameters.
 */
class FakeSql implements Sql {
  readonly committedTags: string[] = [];
  /** Parse errors of the statements' history documents. */
  readonly malformed: unknown[] = [];
  readonly #outcomes: Outcome[];
  #flushes = 0;

  constructor(outcomes: Outcome[]) {
    this.#outcomes = outcomes;
  }

  /** The WAL commits a batch as one statement, atomic on its own. */
  query<Row>(text: string, params: unknown[] = []): Promise<QueryResult<Row>> {
    // The WAL's cleanup of expired rows: nothing has expired here.
    if (text.includes("interval '1 hour'")) return Promise.resolve({ rows: [], rowCount: 0 });
    return this.#atomically((staged) => this.#statement<Row>(text, params, staged));
  }

  async exec(): Promise<void> {}

  transaction<T>(work: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.#atomically((staged) =>
      work({
        query: async <Row>(text: string, params: unknown[] = []) => this.#statement<Row>(text, params, staged),
        async exec() {},
      }),
    );
  }

  async listen(): Promise<() => Promise<void>> {
    return async () => undefined;
  }

  abort(): void {}
  async close(): Promise<void> {}

  async #atomically<T>(body: (staged: string[]) => Promise<T> | T): Promise<T> {
    const outcome = this.#outcomes[this.#flushes++ % this.#outcomes.length] ?? 'commit';
    // A real commit takes I/O: appends made meanwhile must queue behind this batch.
    await new Promise((resolve) => setImmediate(resolve));
    if (outcome === 'failBeforeWork') throw constraintViolation();
    const staged: string[] = [];
    const value = await body(staged);
    if (outcome === 'failAtCommit') throw constraintViolation();
    this.committedTags.push(...staged);
    return value;
  }

  #statement<Row>(text: string, params: unknown[], staged: string[]): QueryResult<Row> {
    if (!text.includes(tables.history)) throw new Error(`unexpected statement: ${text.slice(0, 60)}`);
    // History travels as one JSON document: [[workflow, seq, activation, type, command, payload, at], …].
    for (const param of params) {
      if (typeof param !== 'string' || !param.startsWith('[')) continue;
      let document: unknown[][];
      try {
        document = JSON.parse(param) as typeof document;
      } catch (error) {
        // Not a failure the property allows: the WAL sent a statement Postgres would refuse.
        this.malformed.push(error);
        throw error;
      }
      for (const row of document) {
        const payload = row[5];
        if (typeof payload === 'string' && payload.startsWith(TAG)) staged.push(payload);
      }
    }
    // No start and no change to a workflow row: nothing inserted, nothing updated.
    return { rows: [{ inserted: [], updated: 0, notified: 0 } as Row], rowCount: 1 };
  }
}

type Op = { kind: 'enqueue'; workflow: number; rows: number } | { kind: 'turn' } | { kind: 'microtask' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc
      .record({ workflow: fc.integer({ min: 0, max: 3 }), rows: fc.integer({ min: 0, max: 3 }) })
      .map((r): Op => ({ kind: 'enqueue', ...r })),
  },
  fc.constant<Op>({ kind: 'turn' }),
  fc.constant<Op>({ kind: 'microtask' }),
);

const outcomeArb = fc.array(
  fc.constantFrom<Outcome>('commit', 'commit', 'failBeforeWork', 'failAtCommit'),
  { minLength: 1, maxLength: 12 },
);

interface Appended {
  workflowId: string;
  tags: string[];
  /** Logical time of the append. */
  at: number;
  durable: number;
}

describe('Wal (property)', () => {
  it('never loses or duplicates an append under arbitrary flush failures', async () => {
    await fc.assert(
      // A flush limit of a few rows' worth splits batches anywhere (a row counts about a hundred).
      fc.asyncProperty(
        fc.array(opArb, { maxLength: 60, size: 'max' }),
        outcomeArb,
        fc.integer({ min: 1, max: 1_500 }),
        async (ops, outcomes, maxFlushChars) => {
          const sql = new FakeSql(outcomes);
          let clock = 0;
          const reports: { ids: ReadonlySet<string>; at: number }[] = [];
          const durableOrder: number[] = [];
          const wal = new Wal({
            sql,
            tables,
            highWaterEvents: 1_000,
            maxFlushChars,
            onFlushFailed: (ids) => reports.push({ ids: new Set(ids), at: ++clock }),
          });
          const appended: Appended[] = [];
          const seqs = [0, 0, 0, 0];

          for (const op of ops) {
            if (op.kind === 'turn') await new Promise((resolve) => setImmediate(resolve));
            else if (op.kind === 'microtask') await Promise.resolve();
            else {
              const index = appended.length;
              const workflowId = `wf-${op.workflow}`;
              const from = seqs[op.workflow]!;
              const w: WorkflowWrite = emptyWrite(workflowId, 'wf');
              const tags: string[] = [];
              for (let r = 0; r < op.rows; r++) {
                const tag = `${TAG}${index}.${r}`;
                tags.push(tag);
                w.history.push({ seq: from + r + 1, activation: index, type: 'T', commandId: null, payload: tag, at: 0 });
              }
              seqs[op.workflow] = from + op.rows;
              const entry: Appended = { workflowId, tags, at: ++clock, durable: 0 };
              appended.push(entry);
              wal.enqueue(w, () => {
                entry.durable++;
                durableOrder.push(index);
              });
            }
          }
          await wal.drain();
          expect(sql.malformed).toEqual([]);

          const recorded = new Map<string, number>();
          for (const tag of sql.committedTags) recorded.set(tag, (recorded.get(tag) ?? 0) + 1);
          for (const [tag, count] of recorded) expect(count, `row ${tag} committed ${count} times`).toBe(1);

          const firstReportAfter = (a: Appended) => reports.find((r) => r.at > a.at && r.ids.has(a.workflowId));
          for (const [index, a] of appended.entries()) {
            const rowsCommitted = a.tags.filter((t) => recorded.has(t)).length;
            if (a.durable > 0) {
              expect(a.durable, `append ${index} reported durable twice`).toBe(1);
              expect(rowsCommitted, `append ${index} durable without all its rows`).toBe(a.tags.length);
            } else {
              expect(rowsCommitted, `append ${index} partly committed`).toBe(0);
              const report = firstReportAfter(a);
              expect(report, `append ${index} lost without a report`).toBeDefined();
              // Appends of the same workflow made before that report were built on the lost state.
              for (const later of appended.slice(index + 1)) {
                if (later.workflowId === a.workflowId && later.at < report!.at) expect(later.durable).toBe(0);
              }
            }
          }
          expect(recorded.size).toBe(appended.filter((a) => a.durable > 0).reduce((n, a) => n + a.tags.length, 0));
          // Flushes over disjoint workflows may commit in either order; one workflow's never.
          for (const workflowId of new Set(appended.map((a) => a.workflowId))) {
            const own = durableOrder.filter((i) => appended[i]!.workflowId === workflowId);
            expect(own).toEqual([...own].sort((x, y) => x - y));
          }
          expect(wal.pendingEvents).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
  });
});
