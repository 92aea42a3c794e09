/**
 * The in-process chaos rig: an engine in the test process on the test's schema, reaching Postgres
 * through a FaultProxy (or directly), the chaos workflows and activities, loads of workflows
 * started through the engine itself, and the end-of-run checks. The activities and the checks use
 * their own connections straight to the database, never the proxy.
 *
 * While it runs, the rig also checks the engine's promises to its callers: a `startWorkflow` that
 * resolved has its row committed, a `result()` that resolved matches the committed row. Every
 * call's outcome (resolved, or the error's name and code) is tallied in `calls`.
 */
import { expect } from 'vitest';
import { type Client, createClient, createEngine, type Engine } from 'duraflow';

import { effectsTableSql } from '../fixtures/chaos-activities.js';
import { type CheckReport, checkRun, describeWorkflows, type RunRecord, summaryLine, unfinished } from '../fixtures/chaos-checks.js';
import { CallTally, type CallRecord, ChaosLoad, type LoadOptions, type Starter, summarizeError } from '../fixtures/chaos-load.js';
import { chaosWorkflows } from '../fixtures/chaos-workflows.js';
import type { Backend, TestSchema } from './database.js';
import { trackedEngines } from './engines.js';
import { FaultProxy } from './fault-proxy.js';

/** Compiled chaos activities (the engine's threads load JavaScript). */
export const chaosActivities = new URL('../../dist/test/fixtures/chaos-activities.js', import.meta.url);

export interface RigResult {
  report: CheckReport;
  summary: string;
  /** The checks' violations and the rig's own. */
  violations: string[];
  /** Calls that rejected with an error that is not one of duraflow's. */
  untyped: { op: string; outcome: string; count: number; example?: string }[];
  calls: string;
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class ChaosRig {
  readonly db: TestSchema;
  readonly proxy: FaultProxy | undefined;
  /** The database itself (activities, checks). */
  readonly databaseUrl: string;
  /** What the engine is given: the proxy's URL, or the database's. */
  readonly engineUrl: string;
  readonly calls = new CallTally();
  /** Broken promises seen while running (an acknowledgement before its commit, …). */
  readonly violations: string[] = [];
  /** The engines' warnings and errors. */
  readonly logs: string[] = [];
  readonly #loads: ChaosLoad[] = [];
  readonly #resultWatches: Promise<void>[] = [];
  /** Workflows whose watched result() has not answered yet. */
  readonly #resultsAwaited = new Set<string>();
  #engine: Engine | undefined;
  #client: Client | undefined;
  #enginesStarted = 0;
  #engineWaiters: ((engine: Engine) => void)[] = [];
  #watchCounter = 0;

  private constructor(db: TestSchema, proxy: FaultProxy | undefined, databaseUrl: string) {
    this.db = db;
    this.proxy = proxy;
    this.databaseUrl = databaseUrl;
    this.engineUrl = proxy ? proxy.url(databaseUrl) : databaseUrl;
  }

  /** A fresh schema with the effects table, a proxy if asked, and a running engine. */
  static async open(backend: Backend, options: { proxy: boolean }): Promise<ChaosRig> {
    const db = await backend.schema();
    const url = db.database;
    if (typeof url !== 'string') throw new Error('the chaos rig needs a Postgres server');
    const proxy = options.proxy ? await FaultProxy.start({ port: Number(new URL(url).port || 5432) }) : undefined;
    const rig = new ChaosRig(db, proxy, url);
    await db.query(`CREATE SCHEMA IF NOT EXISTS "${db.schema}"`);
    await rig.startEngine();
    await db.query(effectsTableSql(db.schema));
    return rig;
  }

  get engine(): Engine {
    if (!this.#engine) throw new Error('no engine is running');
    return this.#engine;
  }

  get hasEngine(): boolean {
    return this.#engine !== undefined;
  }

  /** Starts an engine (recovering whatever the database says is unfinished). */
  async startEngine(): Promise<Engine> {
    const n = ++this.#enginesStarted;
    const log =
      (level: string) =>
      (obj: object, msg?: string): void => {
        const err = (obj as { err?: { name?: string; code?: string; message?: string } }).err;
        this.logs.push(`engine#${n} ${level} ${msg ?? ''}${err ? `: ${err.name} ${err.code ?? ''} ${err.message}` : ''}`);
      };
    const engine = await createEngine({
      database: this.engineUrl,
      schema: this.db.schema,
      workflows: chaosWorkflows,
      activities: chaosActivities,
      activityThreads: 2,
      pollIntervalMs: 200,
      logger: { debug() {}, info() {}, warn: log('warn'), error: log('error') },
    });
    trackedEngines.add(engine);
    this.#engine = engine;
    const waiters = this.#engineWaiters;
    this.#engineWaiters = [];
    for (const resolve of waiters) resolve(engine);
    return engine;
  }

  /**
   * Closes the engine gracefully. Resolves with how it went: 'closed', or the error close()
   * rejected with; records a violation if close() takes more than `timeoutMs`.
   */
  async closeEngine(timeoutMs = 30_000): Promise<string> {
    const engine = this.#engine;
    if (!engine) return 'no engine';
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      engine.close().then(
        () => 'closed',
        (error: unknown) => `close() rejected: ${summarizeError(error).message}`,
      ),
      new Promise<string>((resolve) => (timer = setTimeout(() => resolve('hung'), timeoutMs))),
    ]);
    clearTimeout(timer);
    trackedEngines.delete(engine);
    if (this.#engine === engine) this.#engine = undefined;
    if (outcome === 'hung') this.violations.push(`engine.close() did not finish within ${timeoutMs} ms`);
    return outcome;
  }

  /** The running engine, or the next one started (between a close and a restart). */
  #currentEngine(): Promise<Engine> {
    if (this.#engine) return Promise.resolve(this.#engine);
    return new Promise((resolve) => this.#engineWaiters.push(resolve));
  }

  /**
   * Calls the current engine, checking that an acknowledged start is committed; watches the
   * result of every third acknowledged workflow.
   */
  readonly starter: Starter = {
    startWorkflow: async (name, input, options) => {
      const handle = await (await this.#currentEngine()).startWorkflow(name, input, options);
      const rows = await this.db.query(`SELECT status FROM "${this.db.schema}".workflows WHERE id = $1`, [options.workflowId]);
      if (rows.length === 0) this.violations.push(`startWorkflow(${options.workflowId}) resolved before its row was committed`);
      if (this.#watchCounter++ % 3 === 0) this.watchResult(options.workflowId);
      return handle;
    },
    sendEvent: async (workflowId, name, payload) => (await this.#currentEngine()).sendEvent(workflowId, name, payload),
  };

  /** A load of workflows started through the engine. */
  load(options: Omit<LoadOptions, 'starter' | 'fx' | 'onCall'>): ChaosLoad {
    const load = new ChaosLoad({
      ...options,
      starter: this.starter,
      fx: { url: this.databaseUrl, schema: this.db.schema },
      onCall: (call) => this.#onCall(call),
    });
    this.#loads.push(load);
    return load;
  }

  /**
   * A load of workflows started through a client (another process's view of the database,
   * reaching it through the same proxy as the engine), checked the same way.
   */
  async clientLoad(options: Omit<LoadOptions, 'starter' | 'fx' | 'onCall'>): Promise<ChaosLoad> {
    if (!this.#client) {
      this.#client = await createClient({ database: this.engineUrl, schema: this.db.schema, logger: { debug() {}, info() {}, warn() {}, error() {} } });
      trackedEngines.add(this.#client);
    }
    const client = this.#client;
    const starter: Starter = {
      startWorkflow: async (name, input, opts) => {
        const handle = await client.startWorkflow(name, input, opts);
        const rows = await this.db.query(`SELECT status FROM "${this.db.schema}".workflows WHERE id = $1`, [opts.workflowId]);
        if (rows.length === 0) this.violations.push(`client.startWorkflow(${opts.workflowId}) resolved before its row was committed`);
        return handle;
      },
      sendEvent: (workflowId, name, payload) => client.sendEvent(workflowId, name, payload),
    };
    const load = new ChaosLoad({
      ...options,
      starter,
      fx: { url: this.databaseUrl, schema: this.db.schema },
      onCall: (call) => this.#onCall({ ...call, op: `client.${call.op}` }),
    });
    this.#loads.push(load);
    return load;
  }

  async #closeClient(): Promise<void> {
    const client = this.#client;
    if (!client) return;
    this.#client = undefined;
    trackedEngines.delete(client);
    await client.close();
  }

  /**
   * Asks the engine for `workflowId`'s result and, once it answers, checks the answer against the
   * committed row (a caller must never be answered before the commit).
   */
  watchResult(workflowId: string): void {
    const began = performance.now();
    this.#resultsAwaited.add(workflowId);
    const watch = (async () => {
      let value: unknown;
      try {
        value = await (await this.#currentEngine()).result(workflowId, { timeoutMs: 60_000 });
      } catch (error) {
        this.#onCall({ op: 'result', workflowId, ms: performance.now() - began, error: summarizeError(error) });
        return;
      } finally {
        this.#resultsAwaited.delete(workflowId);
      }
      this.#onCall({ op: 'result', workflowId, ms: performance.now() - began });
      const rows = await this.db.query<{ status: string; result: string | null }>(
        `SELECT status, result FROM "${this.db.schema}".workflows WHERE id = $1`,
        [workflowId],
      );
      const row = rows[0];
      if (row?.status !== 'completed' || JSON.stringify(value) !== row.result) {
        this.violations.push(
          `result(${workflowId}) answered ${JSON.stringify(value)} while the database has ${row ? `${row.status} ${row.result}` : 'no row'}`,
        );
      }
    })();
    this.#resultWatches.push(watch);
  }

  /**
   * Calls `inspect` and `result` (with a short timeout) on `workflowId` now and records how they
   * end: during an outage they must wait or reject with one of duraflow's errors. Does not wait.
   */
  probe(workflowId: string): Promise<void> {
    const began = performance.now();
    const record = (op: string, error?: unknown): void =>
      this.#onCall({ op, workflowId, ms: performance.now() - began, ...(error === undefined ? {} : { error: summarizeError(error) }) });
    const engine = this.engine;
    return Promise.all([
      engine.inspect(workflowId).then(
        () => record('inspect'),
        (error: unknown) => record('inspect', error),
      ),
      engine.result(workflowId, { timeoutMs: 30_000 }).then(
        () => record('result'),
        (error: unknown) => record('result', error),
      ),
    ]).then(() => undefined);
  }

  /** Resolves once the history has grown by `rows` rows (progress observed in the database). */
  async historyGrowth(rows: number, timeoutMs = 30_000): Promise<void> {
    const count = async (): Promise<number> =>
      Number((await this.db.query<{ n: string }>(`SELECT count(*) AS n FROM "${this.db.schema}".history`))[0]!.n);
    const target = (await count()) + rows;
    const deadline = Date.now() + timeoutMs;
    while ((await count()) < target) {
      if (Date.now() > deadline) throw new Error(`the history did not grow by ${rows} rows within ${timeoutMs} ms`);
      await pause(20);
    }
  }

  /**
   * Waits for the loads, sends the events of failed starts that exist anyway, waits (up to
   * `timeoutMs`) for every workflow to end, closes the engine gracefully and checks the run.
   */
  async finish(timeoutMs = 40_000): Promise<RigResult> {
    await Promise.all(this.#loads.map((l) => l.run()));
    const exists = async (id: string): Promise<boolean> =>
      (await this.db.query(`SELECT 1 FROM "${this.db.schema}".workflows WHERE id = $1`, [id])).length > 0;
    const orphans: string[] = [];
    for (const load of this.#loads) orphans.push(...(await load.sendEventsOfOrphans(exists)));
    const record: RunRecord = {
      acked: new Map(this.#loads.flatMap((l) => [...l.acked])),
      failedStarts: new Map(this.#loads.flatMap((l) => [...l.failedStarts])),
      eventsRetried: new Set(this.#loads.flatMap((l) => [...l.eventsRetried])),
    };
    const violations: string[] = [];
    let left = [...record.acked.keys(), ...orphans];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      left = await unfinished(this.databaseUrl, this.db.schema, left);
      if (left.length === 0 || Date.now() > deadline) break;
      await pause(50);
    }
    if (left.length > 0) {
      violations.push(`${left.length} workflows did not finish within ${timeoutMs} ms after the faults:`);
      violations.push(...(await describeWorkflows(this.databaseUrl, this.db.schema, left.slice(0, 15))).map((d) => `  ${d}`));
    } else {
      // Everything ended in the database: every result() waiting on it must answer, promptly.
      const answered = await within(Promise.all(this.#resultWatches).then(() => true), 15_000, 'result()').catch(() => false);
      if (!answered) {
        violations.push(`result() never answered for workflows that completed: ${[...this.#resultsAwaited].slice(0, 20).join(', ')}`);
      }
    }
    await this.#closeClient();
    if (this.hasEngine) {
      const closed = await this.closeEngine();
      if (closed !== 'closed') violations.push(`closing the engine after the run: ${closed}`);
    }
    const report = await checkRun(this.databaseUrl, this.db.schema, record);
    for (const load of this.#loads) {
      for (const [id, error] of load.eventsRefused) violations.push(`an event for ${id} was refused: ${error.name} ${error.code ?? ''} ${error.message}`);
    }
    violations.unshift(...report.violations, ...this.violations);
    return {
      report,
      summary: summaryLine(report, 0).replace(', kills 0', ''),
      violations,
      untyped: this.calls.untyped,
      calls: this.calls.toString(),
    };
  }

  /** Closes the engine (if still open), the proxy and the schema. */
  async dispose(): Promise<void> {
    await this.#closeClient().catch(() => undefined);
    if (this.hasEngine) await this.closeEngine(10_000);
    await this.proxy?.close();
    await this.db.drop();
  }

  #onCall(call: CallRecord): void {
    this.calls.add(call);
  }
}

/** Prints a scenario's summary, its calls and, when it failed, its violations and the engine's logs. */
/** The invariants every chaos scenario ends on (soft, so one run reports all that broke). */
export function expectNothingLostOrDoubled(result: RigResult): void {
  expect.soft(result.violations, 'violations').toEqual([]);
  expect.soft(result.untyped, "calls rejected with an error that is not one of duraflow's").toEqual([]);
  expect.soft(result.report.lost, 'lost workflows').toEqual([]);
  expect.soft(result.report.doubled, 'doubled workflows').toEqual([]);
}

export function printRun(scenario: string, rig: ChaosRig, result: RigResult, extra = ''): void {
  const created = result.report.failedStartsCreated;
  const lines = [
    `[${scenario}] ${result.summary}${extra ? `; ${extra}` : ''}`,
    result.calls,
    `  failed starts whose workflow exists anyway (checked like acknowledged ones): ${created.length}${created.length ? ` (${created.join(', ')})` : ''}`,
  ];
  if (result.violations.length > 0) {
    lines.push(`violations:\n  ${result.violations.slice(0, 60).join('\n  ')}`);
    lines.push(`engine log (last 60 lines):\n  ${rig.logs.slice(-60).join('\n  ')}`);
  }
  console.log(lines.join('\n'));
}

/** `promise`, or a rejection naming `what` after `ms` (a deadline, not a synchronisation). */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * What identifies the engine's group-commit statement on the wire: it is the only statement the
 * engine prepares under a name, and that name ends with `_<schema>` (`df_<parts>_<schema>` today).
 * Every Bind (and Parse) message carries the name, NUL-terminated; unnamed statements carry an
 * empty name, and their SQL text has the schema quoted (`"<schema>".`), never followed by a NUL.
 */
export function flushMarker(rig: ChaosRig): string {
  return `_${rig.db.schema}\0`;
}
