import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import {
  ConfigurationError,
  createClient,
  createEngine,
  DatabaseUnavailableError,
  InvalidArgumentError,
  type PayloadTooLargeError,
  UnknownWorkflowError,
  WorkflowAlreadyExistsError,
  type WorkflowContext,
  WorkflowNotFoundError,
} from 'duraflow';

import { backends, serverBackends, type TestSchema, useSchema } from '../helpers/database.js';
import { openClient, quietLogger, startEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

async function idle(ctx: WorkflowContext): Promise<unknown> {
  return ctx.waitForEvent('never');
}

/** Tries each out-of-range time; returns what each call threw, then sleeps until a time long past. */
async function farTimes(ctx: WorkflowContext): Promise<string[]> {
  const thrown: string[] = [];
  for (const attempt of [
    () => ctx.sleep(1e300),
    () => ctx.sleepUntil(9e15),
    () => ctx.sleepUntil(NaN),
    () => ctx.sleepUntil(new Date('not a date')),
    () => ctx.waitForEvent('never', { timeoutMs: 8.64e15 }),
    // Numbers in strings (from an event's payload, say): shown as strings, not as numbers that pass.
    () => ctx.sleep('500' as unknown as number),
    () => ctx.sleepUntil('1700000000000' as unknown as number),
    () => ctx.waitForEvent('never', { timeoutMs: '500' as unknown as number }),
  ]) {
    try {
      void attempt();
      thrown.push('accepted');
    } catch (error) {
      thrown.push(`${(error as Error).name}: ${(error as Error).message}`);
    }
  }
  await ctx.sleepUntil(-1e15);
  return thrown;
}

/** Doubles `n` in an activity, after a short durable sleep. */
async function twice(ctx: WorkflowContext, n: number): Promise<number> {
  await ctx.sleep(1);
  return ctx.activities<{ double(n: number): Promise<number> }>().double(n);
}

/** Sets variables of 300 KB each until one is refused; returns what the refusal said. */
async function manyVars(ctx: WorkflowContext): Promise<unknown> {
  await ctx.sleep(1);
  for (let i = 0; i < 10; i++) {
    try {
      ctx.setVar(`v${i}`, 'x'.repeat(300_000));
    } catch (error) {
      const { name, code, message } = error as PayloadTooLargeError;
      return { at: i, name, code, message };
    }
  }
  return 'all set';
}

async function returnsBigInt(): Promise<unknown> {
  return { big: 10n };
}

const ENGINE_OPTIONS =
  'database, dataDir, schema, maxConnections, logger, maxPayloadBytes, databaseRetryMs, workflows, activities, inlineActivities, ' +
  'activityThreads, activityConcurrency, activityMaxHeapMb, retry, maxCachedWorkflows, pollIntervalMs, walHighWaterEvents, metrics, leaseTtlMs, closeTimeoutMs';

/** Passes workflow-code calls a misspelt option (or a handler that is no function) each; returns what each threw. */
async function misspelt(ctx: WorkflowContext): Promise<string[]> {
  const thrown: string[] = [];
  for (const call of [
    () => ctx.onEvent('x', 'not a function' as never),
    () => ctx.activities({ timeout: 50 } as never),
    () => ctx.activities({ retry: { maxAttempt: 1 } } as never),
    () => void ctx.waitForEvent('x', { timeOutMs: 5 } as never),
  ]) {
    try {
      call();
      thrown.push('accepted');
    } catch (error) {
      thrown.push(`${(error as Error).name}: ${(error as Error).message}`);
    }
  }
  return thrown;
}

const TABLES = ['workflows', 'history', 'timers', 'activity_tasks', 'inbox'];

describe.each(backends)('bad input on $name', (backend) => {
  let db: TestSchema;
  beforeEach(async () => {
    db = await backend.schema();
  });
  afterEach(async () => {
    await db.drop();
  });

  /** Every row of every table, to show a rejected call changed nothing. */
  async function snapshot(): Promise<string> {
    const parts: unknown[] = [];
    for (const table of TABLES) {
      parts.push(await db.query(`SELECT * FROM "${db.schema}".${table} ORDER BY 1, 2`));
    }
    return JSON.stringify(parts);
  }

  it('rejects each bad call with its typed error and stores nothing', async () => {
    const engine = await startEngine(db, { workflows: { idle } });
    const client = await openClient(db);
    try {
      await engine.startWorkflow(idle, undefined, { workflowId: 'taken' });
      await engine.sendEvent('taken', 'kept', { n: 1 });
      await waitFor(async () => (await engine.inspect('taken')).history.some((e) => e.type === 'EventReceived'), 'the event');
      const before = await snapshot();
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      const cases: [string, () => Promise<unknown>, new (...args: never[]) => Error][] = [
        ['duplicate id', () => engine.startWorkflow(idle, undefined, { workflowId: 'taken' }), WorkflowAlreadyExistsError],
        ['duplicate id from a client', () => client.startWorkflow('idle', undefined, { workflowId: 'taken' }), WorkflowAlreadyExistsError],
        ['unregistered name', () => engine.startWorkflow('nobody', {}), UnknownWorkflowError],
        ['unregistered function', () => engine.startWorkflow(returnsBigInt, undefined), UnknownWorkflowError],
        ['result of an unknown id', () => engine.result('missing'), WorkflowNotFoundError],
        ['event to an unknown id', () => engine.sendEvent('missing', 'x'), WorkflowNotFoundError],
        ['inspect of an unknown id', () => client.inspect('missing'), WorkflowNotFoundError],
        ['BigInt input', () => engine.startWorkflow(idle, { n: 1n } as never), InvalidArgumentError],
        ['function input', () => engine.startWorkflow(idle, { f: () => 1 } as never), InvalidArgumentError],
        ['cyclic input', () => engine.startWorkflow(idle, cyclic as never), InvalidArgumentError],
        ['symbol event payload', () => engine.sendEvent('taken', 'x', { s: Symbol('s') }), InvalidArgumentError],
        ['empty id', () => engine.startWorkflow(idle, undefined, { workflowId: '' }), InvalidArgumentError],
        ['over-long id', () => engine.startWorkflow(idle, undefined, { workflowId: 'x'.repeat(300) }), InvalidArgumentError],
        ['id with NUL', () => engine.startWorkflow(idle, undefined, { workflowId: 'a\0b' }), InvalidArgumentError],
        ['id with a lone surrogate', () => engine.startWorkflow(idle, undefined, { workflowId: 'a\ud800' }), InvalidArgumentError],
        ['empty event name', () => engine.sendEvent('taken', ''), InvalidArgumentError],
        ['over-long event name', () => client.sendEvent('taken', 'e'.repeat(1000)), InvalidArgumentError],
        ['non-string id', () => engine.inspect(42 as never), InvalidArgumentError],
        ['null result options', () => client.result('taken', null as never), InvalidArgumentError],
        ['misspelt start option', () => engine.startWorkflow(idle, undefined, { workflowID: 'x' } as never), InvalidArgumentError],
        ['misspelt event option', () => client.sendEvent('taken', 'x', 1, { eventID: 'e' } as never), InvalidArgumentError],
        ['misspelt result option', () => client.result('taken', { timeout: 5 } as never), InvalidArgumentError],
        ['Map input', () => engine.startWorkflow(idle, new Map([[1, 2]]) as never), InvalidArgumentError],
        ['Set in an event payload', () => engine.sendEvent('taken', 'x', { s: new Set([1]) }), InvalidArgumentError],
        ['typed array input', () => client.startWorkflow('idle', new Uint8Array([1])), InvalidArgumentError],
        // An await left out: JSON would store the promise as {} and lose the value it stands for.
        ['promise in an input', () => engine.startWorkflow(idle, { total: Promise.resolve(1) } as never), InvalidArgumentError],
        ['promise as an event payload', () => client.sendEvent('taken', 'x', Promise.resolve(1)), InvalidArgumentError],
      ];
      for (const [what, call, type] of cases) {
        const error = await call().then(
          () => new Error(`${what}: accepted`),
          (e: unknown) => e,
        );
        expect(error, what).toBeInstanceOf(type);
        expect((error as { code?: string }).code, what).toMatch(/^DURAFLOW_/);
      }
      await expect(engine.startWorkflow(idle, undefined, { workflowID: 'x' } as never)).rejects.toThrow(
        'start options has no option "workflowID" (did you mean workflowId?); the options are workflowId, version, startAt',
      );
      await expect(engine.startWorkflow(idle, { at: new Map() } as never)).rejects.toThrow('Map at key "at"');
      await expect(engine.startWorkflow(idle, [Promise.resolve(1)] as never)).rejects.toThrow('Promise at key "0"');
      expect(await snapshot()).toBe(before);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('refuses to start by its function a workflow registered under two names, naming both, and stores nothing', async () => {
    // The same function under a new name and its old one, kept for workflows already started.
    const engine = await startEngine(db, { workflows: { orders: idle, legacyOrders: idle } });
    try {
      const before = await snapshot();
      const error = await engine.startWorkflow(idle, undefined, { workflowId: 'which' }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidArgumentError);
      expect((error as Error).message).toContain('"orders", "legacyOrders"');
      expect(await snapshot()).toBe(before);
      // By name, either starts.
      await engine.startWorkflow('legacyOrders', undefined, { workflowId: 'which' });
      expect((await engine.inspect('which')).workflowName).toBe('legacyOrders');
    } finally {
      await engine.close();
    }
  });

  it('refuses an id taken before this engine started: its first step runs but nothing of it is stored', async () => {
    async function quick(ctx: WorkflowContext, input: { n: number }): Promise<number> {
      ctx.setVar('n', input.n);
      await ctx.sleep(1);
      return input.n;
    }
    const first = await startEngine(db, { workflows: { quick } });
    try {
      expect(await (await first.startWorkflow(quick, { n: 1 }, { workflowId: 'kept' })).result()).toBe(1);
    } finally {
      await first.close();
    }
    const before = await snapshot();
    // A new engine has no actor for 'kept': it runs the first step and offers the row with it.
    const second = await startEngine(db, { workflows: { quick } });
    try {
      await expect(second.startWorkflow(quick, { n: 2 }, { workflowId: 'kept' })).rejects.toBeInstanceOf(
        WorkflowAlreadyExistsError,
      );
      expect(await snapshot()).toBe(before);
      expect((await second.inspect('kept')).vars).toEqual({ n: 1 });
      // The engine goes on: the same id is still taken, a new one works. A result asked for while
      // the refused start is in flight is the stored workflow's.
      const refused = second.startWorkflow(quick, { n: 3 }, { workflowId: 'kept' });
      const result = second.result('kept', { timeoutMs: 10_000 });
      await expect(refused).rejects.toBeInstanceOf(WorkflowAlreadyExistsError);
      expect(await result).toBe(1);
      expect(await (await second.startWorkflow(quick, { n: 4 })).result()).toBe(4);
    } finally {
      await second.close();
    }
  });

  it('refuses times beyond the range of a Date before they reach a flush; a time long past fires at once', async () => {
    const engine = await startEngine(db, { workflows: { farTimes, idle } });
    try {
      const bystander = await engine.startWorkflow(idle, undefined);
      await expect(engine.startWorkflow(idle, undefined, { startAt: 1e300 })).rejects.toThrow(
        new InvalidArgumentError('startAt 1e+300 is outside the range of a Date'),
      );
      expect(await (await engine.startWorkflow(farTimes, undefined)).result()).toEqual([
        'RangeError: sleep duration 1e+300 ends beyond the range of a Date',
        'RangeError: sleepUntil time 9000000000000000 is outside the range of a Date',
        'TypeError: sleepUntil time must be a Date or a finite number of epoch milliseconds, got NaN',
        'TypeError: sleepUntil time must be a Date or a finite number of epoch milliseconds, got Invalid Date',
        'RangeError: timeoutMs 8640000000000000 ends beyond the range of a Date',
        'RangeError: sleep duration must be a finite number of milliseconds >= 0, got the string "500"',
        'TypeError: sleepUntil time must be a Date or a finite number of epoch milliseconds, got the string "1700000000000"',
        'RangeError: timeoutMs must be a finite number of milliseconds >= 0, got the string "500"',
      ]);
      // Nothing failed around them: the other workflow is still running and reachable.
      await engine.sendEvent(bystander.workflowId, 'never', 'here');
      expect(await bystander.result()).toBe('here');
    } finally {
      await engine.close();
    }
  });

  it('throws a misspelt option, or a handler that is not a function, back at the workflow code that passed it', async () => {
    const engine = await startEngine(db, { workflows: { misspelt } });
    try {
      expect(await (await engine.startWorkflow(misspelt, undefined)).result()).toEqual([
        'TypeError: the handler of onEvent("x") must be a function, got string',
        'InvalidArgumentError: activity options has no option "timeout"; the options are retry, startToCloseTimeoutMs',
        expect.stringMatching(/^InvalidArgumentError: activity options\.retry has no option "maxAttempt" \(did you mean maxAttempts\?\)/),
        'InvalidArgumentError: waitForEvent options has no option "timeOutMs" (did you mean timeoutMs?); the options are timeoutMs',
      ]);
    } finally {
      await engine.close();
    }
  });

  it('fails a workflow whose result is not JSON-serialisable, naming the problem', async () => {
    const engine = await startEngine(db, { workflows: { returnsBigInt } });
    try {
      const handle = await engine.startWorkflow(returnsBigInt, undefined);
      const error = await handle.result().catch((e: unknown) => e);
      expect((error as Error).cause).toMatchObject({ name: 'InvalidArgumentError', message: expect.stringMatching(/workflow result .*bigint/) });
    } finally {
      await engine.close();
    }
  });

  it('refuses a variable that would take the variables together over maxPayloadBytes, keeping the others', async () => {
    const engine = await startEngine(db, { workflows: { manyVars }, maxPayloadBytes: 1024 * 1024 });
    try {
      const handle = await engine.startWorkflow(manyVars, undefined, { workflowId: 'vars' });
      expect(await handle.result()).toEqual({
        at: 3,
        name: 'PayloadTooLargeError',
        code: 'DURAFLOW_PAYLOAD_TOO_LARGE',
        message: "the workflow variables' values together is 1200008 bytes as JSON, over the limit of 1048576",
      });
      expect(Object.keys((await engine.inspect('vars')).vars)).toEqual(['v0', 'v1', 'v2']);
    } finally {
      await engine.close();
    }
  });

  it('refuses a schema that holds tables it did not make, naming them, and changes nothing in it', async () => {
    const tablesOf = async () =>
      db.query(`SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1`, [db.schema]);
    const open = (migrate = true) =>
      migrate
        ? createEngine({ database: db.database, schema: db.schema, workflows: { idle }, logger: quietLogger })
        : createClient({ database: db.database, schema: db.schema, logger: quietLogger, migrate: false });
    await db.query(`CREATE SCHEMA IF NOT EXISTS "${db.schema}"`);
    // Another tool's record of its migrations, under the same name.
    await db.query(`CREATE TABLE "${db.schema}".migrations (id serial PRIMARY KEY, "timestamp" bigint NOT NULL, name text NOT NULL)`);
    for (const migrate of [true, false]) {
      const refused = open(migrate);
      await expect(refused).rejects.toBeInstanceOf(ConfigurationError);
      await expect(refused).rejects.toThrow(
        `schema "${db.schema}" has a "migrations" that is not duraflow's table (its columns are id integer, name text, timestamp bigint): give duraflow a schema that no other tool or application uses`,
      );
    }
    // One with duraflow's columns, but not its migrations.
    await db.query(`DROP TABLE "${db.schema}".migrations`);
    await db.query(`CREATE TABLE "${db.schema}".migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    await db.query(`INSERT INTO "${db.schema}".migrations (version, name) VALUES (1, 'create_users')`);
    await expect(open()).rejects.toThrow(`its version 1 is "create_users", not "0001_init.sql"`);
    // Or none of duraflow's versions at all.
    await db.query(`UPDATE "${db.schema}".migrations SET version = 20240115`);
    for (const migrate of [true, false]) await expect(open(migrate)).rejects.toThrow(`its version 20240115 is "create_users")`);
    // Or duraflow's columns under other types.
    await db.query(`DROP TABLE "${db.schema}".migrations`);
    await db.query(`CREATE TABLE "${db.schema}".migrations (version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    await expect(open()).rejects.toThrow('(its columns are applied_at timestamp with time zone, name text, version bigint)');
    expect(await db.query(`SELECT * FROM "${db.schema}".migrations`)).toEqual([]);
    // An application's table of the same name as one of duraflow's.
    await db.query(`DROP TABLE "${db.schema}".migrations`);
    await db.query(`CREATE TABLE "${db.schema}".workflows (id serial PRIMARY KEY, title text)`);
    const taken = open();
    await expect(taken).rejects.toBeInstanceOf(ConfigurationError);
    await expect(taken).rejects.toThrow(`schema "${db.schema}" already has what duraflow's migration 0001_init.sql creates`);
    expect(await tablesOf()).toEqual([{ table_name: 'workflows' }]);
  });

  it('warns, and runs on, on a schema a newer duraflow migrated further', async () => {
    await (await openClient(db)).close();
    await db.query(`INSERT INTO "${db.schema}".migrations (version, name) VALUES (99, '0099_from_the_future.sql')`);
    const warnings: string[] = [];
    const logger = { ...quietLogger, warn: (_obj: object, msg?: string) => void warnings.push(msg ?? '') };
    const engine = await createEngine({ database: db.database, schema: db.schema, workflows: { twice }, inlineActivities: { double: async (n: number) => n * 2 }, logger });
    try {
      expect(warnings.filter((m) => m.includes('newer duraflow'))).toEqual([
        expect.stringMatching(new RegExp(`^schema "${db.schema}" was migrated by a newer duraflow \\(to migration 99; this version knows up to \\d+\\)`)),
      ]);
      expect(await (await engine.startWorkflow(twice, 4)).result()).toBe(8);
    } finally {
      await engine.close();
    }
    const client = await createClient({ database: db.database, schema: db.schema, logger, migrate: false });
    await client.close();
    expect(warnings.filter((m) => m.includes('newer duraflow'))).toHaveLength(2);
  });

  it('opens a client with migrate off only on a schema this version migrated, writing nothing', async () => {
    const options = { database: db.database, schema: db.schema, logger: quietLogger, migrate: false };
    await expect(createClient(options)).rejects.toThrow(`schema "${db.schema}" holds no duraflow tables`);
    expect(await db.query(`SELECT 1 FROM information_schema.schemata WHERE schema_name = $1`, [db.schema])).toEqual([]);
    await (await openClient(db)).close();
    await (await createClient(options)).close();
    // As an older version would have left it: its newest migration not applied.
    const deleted = await db.query<{ newest: number }>(`DELETE FROM "${db.schema}".migrations
      WHERE version = (SELECT max(version) FROM "${db.schema}".migrations) RETURNING version AS newest`);
    const newest = deleted[0]!.newest;
    const behind = createClient(options);
    await expect(behind).rejects.toBeInstanceOf(ConfigurationError);
    await expect(behind).rejects.toThrow(`is at migration ${newest - 1} and this version needs ${newest}`);
    await expect(createClient({ ...options, migrate: 'no' as unknown as boolean })).rejects.toThrow('options.migrate must be a boolean');
  });

  it('refuses an activities module that is missing or exports nothing, and bad engine options', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'duraflow-mod-'));
    try {
      const empty = path.join(dir, 'empty.mjs');
      await writeFile(empty, 'export const notAFunction = 1;\n');
      await expect(startEngine(db, { workflows: { idle }, activities: path.join(dir, 'missing.mjs') })).rejects.toBeInstanceOf(ConfigurationError);
      await expect(startEngine(db, { workflows: { idle }, activities: empty })).rejects.toThrow(/exports no functions/);
      await expect(startEngine(db, { workflows: { idle: 'nope' as never } })).rejects.toBeInstanceOf(TypeError);
      await expect(startEngine(db, { workflows: { idle }, maxCachedWorkflows: 0 })).rejects.toBeInstanceOf(RangeError);
      await expect(startEngine(db, { workflows: { idle }, activityThreads: '10' as never })).rejects.toThrow(
        new RangeError('options.activityThreads must be a positive integer, got the string "10"'),
      );
      await expect(startEngine(db, { workflows: { idle }, metrics: { port: '9464' as never } })).rejects.toThrow(
        new RangeError('options.metrics.port must be an integer 0..65535, got the string "9464"'),
      );
      await expect(startEngine(db, { workflows: { idle }, activityThreads: 100_000 })).rejects.toThrow(
        new RangeError('options.activityThreads must be at most 1024, got 100000'),
      );
      await expect(startEngine(db, { workflows: { idle }, activities: 'https://example.com/a.js' })).rejects.toThrow(
        /^options\.activities must be a file path, a file: URL or a data: URL/,
      );
      const unreachable = startEngine(db, { workflows: { idle }, metrics: { host: 'no-such-host.invalid', port: 0 } });
      await expect(unreachable).rejects.toBeInstanceOf(ConfigurationError);
      await expect(unreachable).rejects.toThrow(/^the metrics server cannot listen on no-such-host\.invalid:0: /);
      await expect(startEngine(db, { workflows: { idle }, maxCachedWorkflow: 5 } as never)).rejects.toThrow(
        new TypeError(`options has no option "maxCachedWorkflow" (did you mean maxCachedWorkflows?); the options are ${ENGINE_OPTIONS}`),
      );
      await expect(startEngine(db, { workflows: { idle }, retry: { maxAttempt: 1 } as never })).rejects.toThrow(
        /^options\.retry has no option "maxAttempt" \(did you mean maxAttempts\?\)/,
      );
      await expect(startEngine(db, { workflows: { idle }, metrics: { prot: 1 } as never })).rejects.toBeInstanceOf(TypeError);
      for (const database of [null, {}]) {
        await expect(createEngine({ database: database as never, workflows: { idle }, logger: quietLogger })).rejects.toThrow(
          new TypeError('options.database must be a postgres:// URL or a PGlite instance'),
        );
      }
      await expect(createClient({ database: db.database, schema: db.schema, migrat: false } as never)).rejects.toThrow(
        /^options has no option "migrat" \(did you mean migrate\?\)/,
      );
      // The same bounds for an engine's close() and a client's: past a timer's reach it would not wait at all.
      for (const open of [
        (closeTimeoutMs: number) => startEngine(db, { workflows: { idle }, closeTimeoutMs }),
        (closeTimeoutMs: number) => createClient({ database: db.database, schema: db.schema, logger: quietLogger, closeTimeoutMs }),
      ]) {
        await expect(open(0)).rejects.toThrow(new RangeError('options.closeTimeoutMs must be a positive integer, got 0'));
        await expect(open(2 ** 31)).rejects.toThrow(new RangeError('options.closeTimeoutMs must be at most 2147483647 ms (24.8 days), got 2147483648'));
      }
      // Past what a timer keeps, the poll would run every millisecond.
      await expect(startEngine(db, { workflows: { idle }, pollIntervalMs: 2 ** 31 })).rejects.toThrow('options.pollIntervalMs must be at most');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

// Only on a server: the setting is a connection option of real Postgres.
describe.each(serverBackends)('a database whose default isolation is serializable, on $name', () => {
  const schemas: string[] = [];
  afterEach(async () => {
    const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
    for (const schema of schemas.splice(0)) await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await pool.end();
  });

  it('lets several clients migrate a fresh schema at once, and runs workflows', async () => {
    const url = new URL(process.env.DATABASE_URL!);
    url.searchParams.set('options', '-c default_transaction_isolation=serializable');
    const database = url.toString();
    for (let round = 0; round < 3; round++) {
      const schema = `t_serializable_${randomBytes(4).toString('hex')}`;
      schemas.push(schema);
      const opened = await Promise.allSettled(
        Array.from({ length: 4 }, () => createClient({ database, schema, logger: quietLogger, maxConnections: 1 })),
      );
      for (const o of opened) if (o.status === 'fulfilled') await o.value.close();
      expect(opened.filter((o) => o.status === 'rejected').map((o) => String((o as PromiseRejectedResult).reason))).toEqual([]);
    }
    const engine = await createEngine({
      database,
      schema: schemas.at(-1)!,
      logger: quietLogger,
      workflows: { twice },
      inlineActivities: { double: async (n: number) => 2 * n },
    });
    try {
      const handles = await Promise.all(Array.from({ length: 20 }, (_, i) => engine.startWorkflow(twice, i)));
      expect(await Promise.all(handles.map((h) => h.result()))).toEqual(handles.map((_, i) => 2 * i));
    } finally {
      await engine.close();
    }
  });
});

describe('a database that cannot be opened', () => {
  it('rejects with DatabaseUnavailableError when nothing answers, and ConfigurationError when the database is missing', async () => {
    const unreachable = 'postgres://postgres@127.0.0.1:1/test';
    for (const open of [
      () => createEngine({ database: unreachable, logger: quietLogger, workflows: { idle } }),
      () => createClient({ database: unreachable, logger: quietLogger }),
    ]) {
      const error = await open().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(DatabaseUnavailableError);
      expect(error).toMatchObject({ code: 'DURAFLOW_DATABASE_UNAVAILABLE', cause: { code: 'ECONNREFUSED' } });
    }
    if (!process.env.DATABASE_URL) return;
    const missing = new URL(process.env.DATABASE_URL);
    missing.pathname = `/duraflow_missing_${randomBytes(4).toString('hex')}`;
    await expect(createClient({ database: missing.toString(), logger: quietLogger })).rejects.toThrow(
      expect.objectContaining({ name: 'ConfigurationError', message: expect.stringMatching(/does not exist/) }),
    );
  });
});

describe.each(backends)('closing a client twice on $name', (backend) => {
  const db = useSchema(backend);

  it('resolves a second close() only once the first has closed everything', async () => {
    const client = await openClient(db());
    let isFirstDone = false;
    const first = client.close().then(() => (isFirstDone = true));
    await client.close();
    expect(isFirstDone).toBe(true);
    await first;
  });
});
