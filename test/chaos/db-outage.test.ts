/**
 * The database out of reach for a few seconds under load, through a fault-injecting TCP proxy
 * between the engine (in this process) and Postgres: connections refused, connections blackholed
 * (accepted, never answered), connections hanging (no byte moves, nothing closes). Meanwhile the
 * engine is called (the load's starts and events, plus inspect and result): each call must wait or
 * reject with one of duraflow's errors. Once the database is back, everything acknowledged must
 * finish exactly once with the right result.
 */
import { describe, expect, it } from 'vitest';

import {
  type Client,
  createClient,
  DatabaseUnavailableError,
  EngineClosedError,
  MetricName,
  TimeoutError,
  type WorkflowContext,
} from 'duraflow';

import { waitsForGo } from '../fixtures/workflows.js';
import { connectEcho, startEchoServer } from '../helpers/chaos-echo.js';
import { ChaosRig, expectNothingLostOrDoubled, printRun } from '../helpers/chaos-rig.js';
import { lockTable, serverBackends, type TestSchema, useSchema } from '../helpers/database.js';
import { fixtureActivities, readMetric, startEngine } from '../helpers/engines.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { waitFor } from '../helpers/wait-for.js';

/** How long each outage lasts (the fault itself, not a wait for anything). */
const OUTAGE_MS = 3000;

type Fixtures = typeof import('../fixtures/activities.js');

/** Two activities at once, ending `first` and `second` ms after they start. */
async function twoWaits(ctx: WorkflowContext, input: { first: number; second: number }): Promise<number[]> {
  const { wait } = ctx.activities<Fixtures>();
  return Promise.all([wait(input.first), wait(input.second)]);
}

const outage = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, OUTAGE_MS));

/** How long `close()` of an engine or a client took, in ms; Infinity if it was not done within `limitMs` (it goes on). */
async function closingTime(closable: { close(): Promise<void> }, limitMs: number): Promise<number> {
  const began = performance.now();
  let limit: NodeJS.Timeout | undefined;
  const isClosed = await Promise.race([
    closable.close().then(() => true),
    new Promise<boolean>((resolve) => (limit = setTimeout(resolve, limitMs, false))),
  ]);
  clearTimeout(limit);
  return isClosed ? performance.now() - began : Infinity;
}

/**
 * A new engine on `db` finishes, with `results`, the twoWaits workflows `ids` a close left
 * unfinished, each activity completed exactly once whether or not the abandoned flush committed.
 */
async function expectRestartFinishes(db: TestSchema, ids: string[], results = [100, 200]): Promise<void> {
  const restarted = await startEngine(db, { workflows: { twoWaits }, activities: fixtureActivities });
  try {
    for (const id of ids) expect(await restarted.result(id, { timeoutMs: 10_000 })).toEqual(results);
  } finally {
    await restarted.close();
  }
  const completions = await db.query(
    `SELECT workflow_id, count(*)::int AS n FROM "${db.schema}".history WHERE type = 'ActivityCompleted' GROUP BY 1 ORDER BY 1`,
  );
  expect(completions).toEqual(ids.map((id) => ({ workflow_id: id, n: 2 })));
}

/** inspect() and result() on a few acknowledged workflows, made while the database is away. */
function probeDuringOutage(rig: ChaosRig, acked: Iterable<string>): Promise<void> {
  return Promise.all([...acked].slice(0, 3).map((id) => rig.probe(id))).then(() => undefined);
}

describe('the fault proxy: unreachable and hanging', () => {
  it('refuses new connections between refuse() and accept(), on the same port', async () => {
    const echo = await startEchoServer();
    const proxy = await FaultProxy.start({ port: echo.port });
    try {
      const open = await connectEcho(proxy.port);
      await proxy.refuse();
      await expect(connectEcho(proxy.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
      // Connections already open are left alone.
      open.socket.write('still;');
      await open.whenReceived('still;');
      await proxy.accept();
      const again = await connectEcho(proxy.port);
      again.socket.write('back;');
      await again.whenReceived('back;');
      open.socket.destroy();
      again.socket.destroy();
    } finally {
      await proxy.close();
      await echo.close();
    }
  });

  it('accepts but never answers new connections while blackholed, then connects them through', async () => {
    const echo = await startEchoServer();
    const proxy = await FaultProxy.start({ port: echo.port });
    try {
      proxy.blackhole();
      const client = await connectEcho(proxy.port);
      client.socket.write('anyone?;');
      await waitFor(() => proxy.heldBytes > 0, 'the bytes held by the proxy', 5_000);
      expect(echo.accepted).toBe(0);
      proxy.resume();
      await client.whenReceived('anyone?;');
      expect(echo.accepted).toBe(1);
      client.socket.destroy();
    } finally {
      await proxy.close();
      await echo.close();
    }
  });

  it('moves no byte either way while hung, closes nothing, and delivers everything in order on resume()', async () => {
    const echo = await startEchoServer();
    const proxy = await FaultProxy.start({ port: echo.port });
    try {
      const client = await connectEcho(proxy.port);
      client.socket.write('a;');
      await client.whenReceived('a;');
      proxy.hang();
      client.socket.write('b;');
      client.socket.write('c;');
      await waitFor(() => proxy.heldBytes >= 4, 'the bytes held by the proxy', 5_000);
      expect(echo.received).toBe('a;');
      expect(proxy.openConnections).toBe(1);
      proxy.resume();
      await client.whenReceived('a;b;c;');
      expect(echo.received).toBe('a;b;c;');
      client.socket.destroy();
    } finally {
      await proxy.close();
      await echo.close();
    }
  });
});

/** An outage: how it starts (new connections refused or blackholed, open ones cut; or all hung) and ends. */
interface Outage {
  name: string;
  prefix: string;
  start(rig: ChaosRig): Promise<void>;
  end(rig: ChaosRig): Promise<void>;
}

const OUTAGES: Outage[] = [
  {
    name: 'connections are refused',
    prefix: 'down-',
    async start(rig) {
      await rig.proxy!.refuse();
      rig.proxy!.cutAll();
    },
    end: (rig) => rig.proxy!.accept(),
  },
  {
    name: 'new connections are blackholed and open ones cut',
    prefix: 'hole-',
    async start(rig) {
      rig.proxy!.blackhole();
      rig.proxy!.cutAll();
    },
    async end(rig) {
      rig.proxy!.resume();
    },
  },
  {
    name: 'every connection hangs without an answer',
    prefix: 'hang-',
    async start(rig) {
      rig.proxy!.hang();
    },
    async end(rig) {
      rig.proxy!.resume();
    },
  },
];

describe.each(serverBackends)('database outages on $name', (backend) => {
  it.each(OUTAGES)('keeps taking calls while $name for a few seconds, then finishes everything', async (outageKind) => {
    const rig = await ChaosRig.open(backend, { proxy: true });
    try {
      const load = rig.load({ prefix: outageKind.prefix, count: 80, spreadMs: 5000 });
      void load.run();
      void (await rig.clientLoad({ prefix: `${outageKind.prefix}client-`, count: 30, spreadMs: 5000 })).run();
      await rig.historyGrowth(40);
      await outageKind.start(rig);
      const probes = probeDuringOutage(rig, load.acked.keys());
      await outage();
      await outageKind.end(rig);
      await probes;
      const result = await rig.finish();
      printRun(outageKind.name, rig, result, `${OUTAGE_MS} ms`);
      expectNothingLostOrDoubled(result);
    } finally {
      await rig.dispose();
    }
  });
});

describe.each(serverBackends)('calls while the database is away on $name', (backend) => {
  const schema = useSchema(backend);

  /** A client whose connections go through `proxy`; `warnings` collects what it logs. */
  async function clientBehind(db: TestSchema, proxy: FaultProxy, warnings: string[] = [], closeTimeoutMs?: number): Promise<Client> {
    return createClient({
      database: proxy.url(db.database as string),
      schema: db.schema,
      databaseRetryMs: 500,
      closeTimeoutMs,
      logger: { debug() {}, info() {}, warn: (_obj: object, msg?: string) => void warnings.push(msg ?? ''), error() {} },
    });
  }

  it('reports a start or an event that committed as done, though the notice after it fails', async () => {
    const db = schema();
    const proxy = await FaultProxy.start();
    const client = await clientBehind(db, proxy);
    try {
      // New connections are refused: the commit goes over the idle one, which the notice then loses.
      await proxy.refuse();
      const cut = proxy.cutOnNextRequest('pg_notify');
      const handle = await client.startWorkflow('waitsForGo', { label: 'noticed' }, { workflowId: 'noticed' });
      await cut;
      expect(handle.workflowId).toBe('noticed');
      // The cut took every connection: one is made again (an inspect) before new ones are refused.
      await proxy.accept();
      await client.inspect('noticed');
      await proxy.refuse();
      const cutAgain = proxy.cutOnNextRequest('pg_notify');
      await client.sendEvent('noticed', 'go', 'once');
      await cutAgain;
      await proxy.accept();
      expect(await db.query(`SELECT count(*)::int AS n FROM "${db.schema}".inbox WHERE workflow_id = 'noticed'`)).toEqual([{ n: 1 }]);
    } finally {
      await client.close();
      await proxy.close();
    }
  });

  it('keeps trying for the whole of databaseRetryMs before DatabaseUnavailableError', async () => {
    const db = schema();
    const proxy = await FaultProxy.start();
    const client = await clientBehind(db, proxy);
    try {
      await proxy.refuse();
      proxy.cutAll();
      const began = Date.now();
      await expect(client.inspect('anything')).rejects.toBeInstanceOf(DatabaseUnavailableError);
      expect(Date.now() - began).toBeGreaterThanOrEqual(500);
    } finally {
      await client.close();
      await proxy.close();
    }
  });

  it("times result() out at the caller's timeout, and ends a waiting call with EngineClosedError on close", async () => {
    const db = schema();
    const proxy = await FaultProxy.start();
    const client = await clientBehind(db, proxy);
    await client.startWorkflow('waitsForGo', { label: 'away' }, { workflowId: 'away' });
    await proxy.refuse();
    proxy.cutAll();
    // Its first read would keep trying for databaseRetryMs: the timeout comes first.
    await expect(client.result('away', { timeoutMs: 100 })).rejects.toBeInstanceOf(TimeoutError);
    const reading = client.inspect('away');
    reading.catch(() => undefined);
    await client.close();
    await expect(reading).rejects.toBeInstanceOf(EngineClosedError);
    await proxy.close();
  });

  // A client's close waited for its UNLISTEN (15 s) and for each statement under way (30 s) on
  // connections that got no answer, whatever the engine's closeTimeoutMs.
  it('closes a client within closeTimeoutMs while every connection hangs, ending its calls under way with EngineClosedError', async () => {
    const db = schema();
    const proxy = await FaultProxy.start();
    const closeTimeoutMs = 1000;
    const warnings: string[] = [];
    const client = await clientBehind(db, proxy, warnings, closeTimeoutMs);
    try {
      await client.startWorkflow('waitsForGo', { label: 'hung' }, { workflowId: 'hung' });
      proxy.hang();
      const calls = [
        client.inspect('hung'),
        client.leases(),
        client.sendEvent('hung', 'go', 'never'),
        client.startWorkflow('waitsForGo', { label: 'unsure' }, { workflowId: 'unsure' }),
      ];
      for (const call of calls) call.catch(() => undefined);
      await waitFor(() => proxy.heldBytes > 0, 'a statement to wait for its answer', 5_000);
      // The deadline, then a moment to drop the connections and settle what waited on them.
      expect(await closingTime(client, closeTimeoutMs + 2000)).toBeLessThan(closeTimeoutMs + 2000);
      for (const call of calls) await expect(call).rejects.toBeInstanceOf(EngineClosedError);
      expect(warnings).toContainEqual(expect.stringMatching(/^the database did not let close\(\) finish in time/));
    } finally {
      proxy.resume();
      await client.close();
      await proxy.close();
    }
  });

  it('checks a result again after a check failed, when the database is back', async () => {
    const db = schema();
    const engine = await startEngine(db, { workflows: { waitsForGo } });
    const proxy = await FaultProxy.start();
    const warnings: string[] = [];
    const client = await clientBehind(db, proxy, warnings);
    try {
      await engine.startWorkflow(waitsForGo, { label: 'later' }, { workflowId: 'later' });
      const result = client.result('later', { timeoutMs: 20_000 });
      result.catch(() => undefined);
      // The client's open connections stay (its LISTEN among them); a new one is refused, and the
      // answer to the check that the workflow's end sets off is lost.
      await proxy.refuse();
      const lost = proxy.loseResponseTo('status IN');
      await engine.sendEvent('later', 'go', 'went');
      await lost;
      await waitFor(() => warnings.some((w) => w.startsWith('checking results failed')), 'the check to fail');
      await proxy.accept();
      expect(await result).toEqual({ label: 'later', ev: 'went' });
    } finally {
      await client.close();
      await engine.close();
      await proxy.close();
    }
  });

  it('ends the starts a closing engine could not store with EngineClosedError, carrying the cause', async () => {
    const db = schema();
    const proxy = await FaultProxy.start();
    const engine = await startEngine({ ...db, database: proxy.url(db.database as string) }, { workflows: { waitsForGo } });
    await engine.startWorkflow(waitsForGo, { label: 'stored' }, { workflowId: 'stored' });
    await proxy.refuse();
    proxy.cutAll();
    // One created with its first step, one stored alone (delayed): both in flushes that keep failing.
    const starts = [
      engine.startWorkflow(waitsForGo, { label: 'now' }, { workflowId: 'now' }),
      engine.startWorkflow(waitsForGo, { label: 'later' }, { workflowId: 'later', startAt: Date.now() + 60_000 }),
    ];
    for (const start of starts) start.catch(() => undefined);
    await waitFor(async () => (await readMetric(engine, MetricName.WalFlushErrors)) >= 2, 'the flushes to fail');
    await engine.close();
    for (const start of starts) {
      const error = await start.then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(EngineClosedError);
      expect((error as Error).cause).toMatchObject({ code: 'ECONNREFUSED' });
    }
    await proxy.close();
  });

  // A flush waiting for answers that never came held close() for the statement timeout (30 s) of
  // each of its tries and of the checks whether one committed; the lease release waited for a
  // renewal stuck the same way, then for a connection: 40 to 90 s in all.
  it('closes within closeTimeoutMs while every connection hangs, and a restart finishes what did not commit', async () => {
    const db = schema();
    const proxy = await FaultProxy.start();
    const closeTimeoutMs = 1000;
    const engine = await startEngine({ ...db, database: proxy.url(db.database as string) }, {
      workflows: { twoWaits },
      activities: fixtureActivities,
      closeTimeoutMs,
      // Its close cannot end its lease: the restart waits for it to expire.
      leaseTtlMs: 1000,
    });
    const ids = ['a', 'b', 'c'];
    try {
      for (const id of ids) await engine.startWorkflow(twoWaits, { first: 100, second: 200 }, { workflowId: id });
      proxy.hang();
      // The first attempts end: the flush of their results waits for an answer.
      await waitFor(async () => (await readMetric(engine, MetricName.ActivityAttempts)) >= 3, 'three attempts to end');
      await waitFor(async () => (await readMetric(engine, MetricName.WalFlushesInFlight)) >= 1, 'a flush to hang');
      // The deadline, then a moment to drop the connections and settle what waited on them.
      expect(await closingTime(engine, closeTimeoutMs + 2000)).toBeLessThan(closeTimeoutMs + 2000);
      proxy.resume();
      await expectRestartFinishes(db, ids);
    } finally {
      proxy.resume();
      await engine.close();
      await proxy.close();
    }
  });

  it('closes within closeTimeoutMs while a lock holds its flush, and a restart finishes what did not commit', async () => {
    const db = schema();
    const closeTimeoutMs = 1000;
    const engine = await startEngine(db, { workflows: { twoWaits }, activities: fixtureActivities, closeTimeoutMs, leaseTtlMs: 1000 });
    const ids = ['a', 'b'];
    // Every flush records its token in wal_commits: locked, the flush of the first results waits.
    let lock: { release(): Promise<void> } | undefined;
    try {
      for (const id of ids) await engine.startWorkflow(twoWaits, { first: 100, second: 200 }, { workflowId: id });
      lock = await lockTable(db, 'wal_commits');
      await waitFor(async () => (await readMetric(engine, MetricName.ActivityAttempts)) >= 2, 'two attempts to end');
      await waitFor(async () => (await readMetric(engine, MetricName.WalFlushesInFlight)) >= 1, 'a flush to wait for the lock');
      expect(await closingTime(engine, closeTimeoutMs + 2000)).toBeLessThan(closeTimeoutMs + 2000);
      // The flush the close gave up on may still commit once it gets the lock: the restart takes it either way.
      await lock.release();
      await expectRestartFinishes(db, ids);
    } finally {
      await lock?.release();
      await engine.close();
    }
  });

  // Actors waiting for room in the WAL held close() until the database came back.
  it('closes while its WAL is congested and the database refuses connections', async () => {
    const db = schema();
    const proxy = await FaultProxy.start();
    const engine = await startEngine({ ...db, database: proxy.url(db.database as string) }, {
      workflows: { twoWaits },
      activities: fixtureActivities,
      walHighWaterEvents: 1,
      // Its close cannot end its lease (the database is away): the restart waits for it to expire.
      leaseTtlMs: 1000,
    });
    try {
      for (const id of ['a', 'b']) await engine.startWorkflow(twoWaits, { first: 300, second: 600 }, { workflowId: id });
      await proxy.refuse();
      proxy.cutAll();
      await waitFor(async () => (await readMetric(engine, MetricName.ActivityAttempts)) >= 4, 'the four attempts to end');
      await waitFor(async () => (await readMetric(engine, MetricName.WalFlushErrors)) >= 1, 'a flush to fail');
      expect(await closingTime(engine, 8000)).toBeLessThan(8000);
      await proxy.accept();
      await expectRestartFinishes(db, ['a', 'b'], [300, 600]);
    } finally {
      await proxy.accept();
      await engine.close();
      await proxy.close();
    }
  });
});
