/**
 * Database connection faults under load, through a fault-injecting TCP proxy between the engine
 * (in this process) and Postgres: every connection cut while the group-commit statement is in
 * flight, and committed flushes whose answer never comes back (the engine cannot know they
 * committed). The engine must keep taking calls (they wait, or reject with one of duraflow's
 * errors), reconnect, never release a side effect of an uncommitted flush, and finish every
 * acknowledged workflow exactly once with the right result.
 */
import { describe, expect, it } from 'vitest';

import { MetricName } from 'duraflow';

import { checkRun, unfinished } from '../fixtures/chaos-checks.js';
import { type ChaosKind, eventsFor, expectedResult } from '../fixtures/chaos-workflows.js';
import { connectEcho, startEchoServer } from '../helpers/chaos-echo.js';
import { ChaosRig, expectNothingLostOrDoubled, flushMarker, printRun, within } from '../helpers/chaos-rig.js';
import { PgDriver } from '../../storage/pg-driver.js';
import { serverBackends, useSchema } from '../helpers/database.js';
import { readMetric } from '../helpers/engines.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { waitFor } from '../helpers/wait-for.js';

describe('the fault proxy: cuts and lost answers', () => {
  it('forwards both ways, and resets every connection on cutAll()', async () => {
    const echo = await startEchoServer();
    const proxy = await FaultProxy.start({ port: echo.port });
    try {
      const client = await connectEcho(proxy.port);
      client.socket.write('hello');
      await client.whenReceived('hello');
      expect(proxy.openConnections).toBe(1);
      expect(proxy.cutAll()).toBe(1);
      expect(await client.closed).toBe('ECONNRESET');
    } finally {
      await proxy.close();
      await echo.close();
    }
  });

  it('cuts right after a request with the marker reached the server', async () => {
    const echo = await startEchoServer();
    const proxy = await FaultProxy.start({ port: echo.port });
    try {
      const client = await connectEcho(proxy.port);
      const cut = proxy.cutOnNextRequest('MARK');
      client.socket.write('plain;');
      await client.whenReceived('plain;');
      client.socket.write('with MARK;');
      expect(await cut).toBe(1);
      expect(await client.closed).toBe('ECONNRESET');
      await waitFor(() => echo.received.includes('with MARK;'), 'the request at the server', 5_000);
    } finally {
      await proxy.close();
      await echo.close();
    }
  });

  it('loses the answer to a request with the marker, which the server did get', async () => {
    const echo = await startEchoServer();
    const proxy = await FaultProxy.start({ port: echo.port });
    try {
      const client = await connectEcho(proxy.port);
      const lost = proxy.loseResponseTo('MARK');
      client.socket.write('q MARK;');
      await lost;
      expect(await client.closed).toBe('ECONNRESET');
      expect(echo.received).toBe('q MARK;');
      expect(client.received).toBe('');
    } finally {
      await proxy.close();
      await echo.close();
    }
  });

  it('holds the answers of the connections that sent the marker until resume()', async () => {
    const echo = await startEchoServer();
    const proxy = await FaultProxy.start({ port: echo.port });
    try {
      const marked = await connectEcho(proxy.port);
      const other = await connectEcho(proxy.port);
      proxy.holdResponsesTo('MARK');
      const seen = proxy.whenRequest('MARK');
      marked.socket.write('MARK 1;');
      await seen;
      await waitFor(() => proxy.heldBytes > 0, 'the held answer', 5_000);
      other.socket.write('free;');
      await other.whenReceived('free;');
      expect(marked.received).toBe('');
      proxy.resume();
      await marked.whenReceived('MARK 1;');
      marked.socket.destroy();
      other.socket.destroy();
    } finally {
      await proxy.close();
      await echo.close();
    }
  });
});

describe.each(serverBackends)('connection faults on $name', (backend) => {
  it("acknowledges a start whose commit went through but whose answer was lost", async () => {
    const rig = await ChaosRig.open(backend, { proxy: true });
    try {
      // The engine is idle: the next flush is this start's, alone in its batch.
      const lost = rig.proxy!.loseResponseTo(flushMarker(rig));
      const started = rig.engine.startWorkflow('chaosSeq', { n: 7, fx: { url: rig.databaseUrl, schema: rig.db.schema } }, { workflowId: 'lost-ack-1' });
      const outcome = await started.then(
        () => 'resolved',
        (error: unknown) => `${(error as Error).name} (${(error as { code?: string }).code}): ${(error as Error).message}`,
      );
      await within(lost, 10_000, 'the start on the wire');
      const rows = await rig.db.query<{ id: string }>(`SELECT id FROM "${rig.db.schema}".workflows WHERE id = 'lost-ack-1'`);
      console.log(`[lost start answer] startWorkflow: ${outcome}; rows for lost-ack-1: ${rows.length}`);
      // The workflow exists once, and the caller must not be told that someone else took its id.
      expect(rows).toHaveLength(1);
      expect.soft(outcome, 'startWorkflow of a fresh id whose commit answer was lost').toBe('resolved');
      expect(await rig.engine.result('lost-ack-1', { timeoutMs: 20_000 })).toBe(expectedResult('chaosSeq', 7));
    } finally {
      await rig.dispose();
    }
  });

  it("acknowledges a start committed in one batch with another workflow's step, whose answer was lost", async () => {
    const rig = await ChaosRig.open(backend, { proxy: true });
    try {
      const engine = rig.engine;
      const proxy = rig.proxy!;
      const marker = flushMarker(rig);
      const fx = { url: rig.databaseUrl, schema: rig.db.schema };
      const [go, more] = eventsFor('chaosEvent', 1);
      await engine.startWorkflow('chaosEvent', { n: 1, fx }, { workflowId: 'mix-b' });
      await waitFor(async () => (await engine.inspect('mix-b')).waitingOn.events.length > 0, 'mix-b waiting for its event');

      // Both flush slots taken by two starts whose commits' answers are held.
      proxy.holdResponsesTo(marker);
      const starts: Record<string, Promise<string>> = {};
      const start = (id: string, n: number): void => {
        starts[id] = engine.startWorkflow('chaosSeq', { n, fx }, { workflowId: id }).then(
          () => 'resolved',
          (error: unknown) => `${(error as Error).name} (${(error as { code?: string }).code}): ${(error as Error).message}`,
        );
      };
      let seen = proxy.whenRequest(marker);
      start('mix-x1', 2);
      await within(seen, 10_000, 'the first start on the wire');
      seen = proxy.whenRequest(marker);
      start('mix-x2', 3);
      await within(seen, 10_000, 'the second start on the wire');
      await waitFor(async () => (await readMetric(engine, MetricName.WalFlushesInFlight)) === 2, 'two flushes in flight', 10_000);
      // The events of the flushes in flight count as pending: what is appended from now on adds to them.
      const inFlight = await readMetric(engine, MetricName.WalPendingEvents);

      // mix-b's next step and a third start wait for the next batch, together: both are appended
      // before the flushes in flight are answered.
      await engine.sendEvent('mix-b', 'go', go!.payload);
      const withStep = await waitFor(async () => {
        const pending = await readMetric(engine, MetricName.WalPendingEvents);
        return pending > inFlight && pending;
      }, "mix-b's step appended", 10_000);
      start('mix-x3', 4);
      await waitFor(async () => (await readMetric(engine, MetricName.WalPendingEvents)) > withStep, "mix-x3's first step appended", 10_000);

      // That batch commits; its answer is lost.
      const lost = proxy.loseResponseTo(marker);
      proxy.resume();
      await within(lost, 10_000, 'the batch on the wire');
      // The answer lost was that of one transaction holding both mix-b's step and mix-x3's start.
      const xminOf = async (workflowId: string, type: string): Promise<string | undefined> =>
        (
          await rig.db.query<{ xmin: string }>(
            `SELECT xmin::text FROM "${rig.db.schema}".history WHERE workflow_id = $1 AND type = $2 ORDER BY seq LIMIT 1`,
            [workflowId, type],
          )
        )[0]?.xmin;
      const stepXmin = await xminOf('mix-b', 'EventReceived');
      expect(stepXmin, "mix-b's step").toBeDefined();
      expect(await xminOf('mix-x3', 'WorkflowStarted'), "mix-x3's start, in the transaction of mix-b's step").toBe(stepXmin);
      await engine.sendEvent('mix-b', 'more', more!.payload);
      const outcomes = Object.fromEntries(await Promise.all(Object.entries(starts).map(async ([id, p]) => [id, await p])));
      console.log(`[lost answer, start + step in one batch] ${JSON.stringify(outcomes)}`);

      const record = {
        acked: new Map<string, { kind: ChaosKind; n: number }>([['mix-b', { kind: 'chaosEvent', n: 1 }]]),
        failedStarts: new Map<string, { kind: ChaosKind; n: number }>(),
      };
      for (const [id, n] of [['mix-x1', 2], ['mix-x2', 3], ['mix-x3', 4]] as const) {
        (outcomes[id] === 'resolved' ? record.acked : record.failedStarts).set(id, { kind: 'chaosSeq', n });
      }
      await waitFor(async () => (await unfinished(rig.databaseUrl, rig.db.schema, ['mix-b', 'mix-x1', 'mix-x2', 'mix-x3'])).length === 0, 'all four to finish', 30_000);
      await rig.closeEngine();
      const report = await checkRun(rig.databaseUrl, rig.db.schema, record);
      expect.soft(report.violations, 'violations').toEqual([]);
      expect.soft(outcomes, 'the starts, all committed').toEqual({ 'mix-x1': 'resolved', 'mix-x2': 'resolved', 'mix-x3': 'resolved' });
    } finally {
      await rig.dispose();
    }
  });

  it('cuts every connection while a flush is in flight, six times under load', async () => {
    const rig = await ChaosRig.open(backend, { proxy: true });
    try {
      const load = rig.load({ prefix: 'cut-', count: 90, spreadMs: 3000 });
      void load.run();
      void (await rig.clientLoad({ prefix: 'cut-client-', count: 30, spreadMs: 3000 })).run();
      let reset = 0;
      for (let i = 0; i < 6; i++) {
        await rig.historyGrowth(20);
        reset += await within(rig.proxy!.cutOnNextRequest(flushMarker(rig)), 15_000, 'a flush on the wire');
      }
      const result = await rig.finish();
      printRun('cut mid-flush', rig, result, `6 cuts, ${reset} connections reset`);
      expect(reset).toBeGreaterThanOrEqual(6);
      expectNothingLostOrDoubled(result);
    } finally {
      await rig.dispose();
    }
  });

  it('loses the answer to committed flushes (ambiguous commits), five times under load', async () => {
    const rig = await ChaosRig.open(backend, { proxy: true });
    try {
      const load = rig.load({ prefix: 'amb-', count: 90, spreadMs: 3000 });
      void load.run();
      void (await rig.clientLoad({ prefix: 'amb-client-', count: 30, spreadMs: 3000 })).run();
      for (let i = 0; i < 5; i++) {
        await rig.historyGrowth(20);
        await within(rig.proxy!.loseResponseTo(flushMarker(rig)), 15_000, 'a flush on the wire');
      }
      const result = await rig.finish();
      printRun('lost flush answers', rig, result, '5 committed flushes unacknowledged');
      expectNothingLostOrDoubled(result);
    } finally {
      await rig.dispose();
    }
  });
});

describe.each(serverBackends)("the pg driver's LISTEN connection on $name", (backend) => {
  const schema = useSchema(backend);

  it('replaces a LISTEN connection that stops answering, and tells the listeners', async () => {
    const db = schema();
    const proxy = await FaultProxy.start();
    const driver = new PgDriver({
      connectionString: proxy.url(db.database as string),
      maxConnections: 2,
      onError() {},
      listenCheckMs: 200,
    });
    const channel = `check_${db.schema}`;
    const heard: string[] = [];
    try {
      await driver.listen(channel, (payload) => heard.push(payload));
      // The LISTEN connection's check goes unanswered, as after a silent drop; nothing else does.
      // Only that connection: holding its replacement's checks too would cycle connections
      // every two check periods, and a notification sent between two of them is lost.
      proxy.holdResponsesTo('SELECT 1', { firstOnly: true });
      await waitFor(async () => heard.includes('reconnected'), 'the listeners to hear of the reconnect');
      // A notification sent while the connection is being replaced again is lost, and the
      // listeners hear 'reconnected' once more: a check answered after listenCheckMs counts as
      // unanswered, which an event loop held up on a loaded machine can make of any check. As a
      // listener would, send again after each reconnect heard.
      let reconnects = 0;
      await waitFor(async () => {
        const heardReconnects = heard.filter((payload) => payload === 'reconnected').length;
        if (heardReconnects > reconnects) {
          reconnects = heardReconnects;
          await db.query('SELECT pg_notify($1, $2)', [channel, 'after']);
        }
        return heard.includes('after');
      }, 'a notification on the new connection');
      expect(heard.indexOf('after')).toBeGreaterThan(heard.indexOf('reconnected'));
    } finally {
      proxy.resume();
      await driver.close();
      await proxy.close();
    }
  });

  it('closes cleanly while its LISTEN connection is being re-established', async () => {
    const db = schema();
    const proxy = await FaultProxy.start();
    const driver = new PgDriver({ connectionString: proxy.url(db.database as string), maxConnections: 2, onError() {} });
    const channel = `close_${db.schema}`;
    const heard: string[] = [];
    try {
      await driver.listen(channel, (payload) => heard.push(payload));
      const accepted = proxy.stats.accepted;
      // The connection drops; the reconnect reaches a proxy that forwards nothing yet.
      proxy.blackhole();
      proxy.cutAll();
      await waitFor(async () => proxy.stats.accepted > accepted, 'a reconnect under way');
      const closing = driver.close();
      proxy.resume();
      await closing;
      const listening = async (): Promise<number> =>
        (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = $1`, [`LISTEN "${channel}"`]))[0]!.n;
      await waitFor(async () => (await listening()) === 0, 'no connection left listening');
      expect(heard).not.toContain('reconnected');
    } finally {
      proxy.resume();
      await proxy.close();
    }
  });
});
