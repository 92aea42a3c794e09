import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { type HistoryEvent, MetricName, type RetryPolicy, type WorkflowContext } from 'duraflow';

import { backends, type TestSchema } from '../helpers/database.js';
import { fixtureActivities, readMetric, startEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

type Fixtures = typeof import('../fixtures/activities.js');

async function loaded(ctx: WorkflowContext, input: { n: number }): Promise<number> {
  const { wait, flaky } = ctx.activities<Fixtures>({ retry: { initialIntervalMs: 1 } });
  await ctx.sleep(20);
  await wait(20);
  // Every third workflow's activity fails once: its attempts count twice.
  return input.n % 3 === 0 ? flaky({ succeedOn: 2 }) : wait(1);
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text format strictly enough that a malformed line fails the test. */
function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      expect(line, 'comment line').toMatch(/^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$/);
      continue;
    }
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/.exec(line);
    expect(match, `sample line: ${line}`).not.toBeNull();
    const labels: Record<string, string> = {};
    for (const pair of (match![3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!;
    }
    samples.push({ name: match![1]!, labels, value: Number(match![4]) });
  }
  return samples;
}

async function scrape(url: string): Promise<Sample[]> {
  const response = await fetch(url);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
  return parseExposition(await response.text());
}

/** The engine's registry as a scrape would read it, without a server. */
async function scrapeRegistry(engine: { metrics: { metrics(): Promise<string> } }): Promise<Sample[]> {
  return parseExposition(await engine.metrics.metrics());
}

function total(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

const GAUGES = [
  MetricName.WalPendingEvents,
  MetricName.MailboxMessages,
  MetricName.ActorsInMemory,
  MetricName.ActivityTasksQueued,
  MetricName.ActivityTasksRunning,
  MetricName.TimersArmed,
];

describe.each(backends)('metrics on $name', (backend) => {
  let db: TestSchema;
  let other: TestSchema;
  beforeEach(async () => {
    db = await backend.schema();
    other = await backend.schema();
  });
  afterEach(async () => {
    await db.drop();
    await other.drop();
  });

  it('serves queue depths, counters and latencies over HTTP while a load runs', async () => {
    const engine = await startEngine(db, {
      workflows: { loaded },
      activities: fixtureActivities,
      activityThreads: 1,
      activityConcurrency: 4,
      // Backpressure from a tiny WAL allowance makes actors wait, so their mailboxes fill.
      walHighWaterEvents: 1,
      metrics: { port: 0 },
    });
    try {
      expect(engine.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const count = 300;
      const ids = Array.from({ length: count }, (_, n) => `metrics-wf-${n}`);
      const handles = await Promise.all(ids.map((workflowId, n) => engine.startWorkflow(loaded, { n }, { workflowId })));
      const done = Promise.all(handles.map((h) => h.result()));
      let finished = false;
      void done.then(() => (finished = true));
      const peaks = new Map<string, number>();
      while (!finished) {
        const samples = await scrape(engine.metricsUrl!);
        for (const gauge of GAUGES) peaks.set(gauge, Math.max(peaks.get(gauge) ?? 0, total(samples, gauge)));
      }
      await done;
      // The embedded database answers within the turn of the event loop that asked (it runs in
      // this thread): a flush, and the steps waiting behind it, are over before any scrape (a turn
      // of its own) can see them. Against a server both wait on the network and show.
      const unseenInProcess: string[] = [MetricName.WalPendingEvents, MetricName.MailboxMessages];
      for (const gauge of GAUGES) {
        if (backend.name === 'pglite' && unseenInProcess.includes(gauge)) continue;
        expect(peaks.get(gauge), `${gauge} while loaded`).toBeGreaterThan(0);
      }

      const after = await scrape(engine.metricsUrl!);
      for (const gauge of [...GAUGES, MetricName.WalFlushesInFlight, MetricName.TimersOverdue]) {
        expect(total(after, gauge), `${gauge} when idle`).toBe(0);
      }
      const byWorkflow = { workflow: 'loaded' };
      expect(total(after, MetricName.WorkflowsStarted, byWorkflow)).toBe(count);
      expect(total(after, MetricName.WorkflowsCompleted, byWorkflow)).toBe(count);
      expect(total(after, MetricName.WorkflowsFailed)).toBe(0);
      expect(total(after, `${MetricName.WorkflowDuration}_count`, { ...byWorkflow, outcome: 'completed' })).toBe(count);
      // Two activities per workflow, plus the failed first attempt of every third one.
      const attempts = 2 * count + Math.ceil(count / 3);
      expect(total(after, MetricName.ActivityAttempts)).toBe(attempts);
      expect(total(after, `${MetricName.ActivityRunDuration}_count`)).toBe(attempts);
      expect(total(after, `${MetricName.ActivityScheduleToStart}_count`)).toBe(attempts);
      expect(total(after, MetricName.ActivityRetries, { activity: 'flaky' })).toBe(Math.ceil(count / 3));
      // Every workflow's sleep, and every retry's wait.
      expect(total(after, `${MetricName.TimerLateness}_count`)).toBe(count + Math.ceil(count / 3));
      const events = total(after, MetricName.EventsWritten);
      expect(events).toBe(count * 8); // started, 2×(scheduled, completed), timer started/fired, completed
      expect(total(after, `${MetricName.WalBatchEvents}_sum`)).toBe(events);
      expect(total(after, MetricName.WalFlushes)).toBeLessThan(events / 5);
      expect(total(after, `${MetricName.WorkflowStepDuration}_count`)).toBeGreaterThanOrEqual(count * 4);

      const text = await (await fetch(engine.metricsUrl!)).text();
      for (const id of ids) expect(text.includes(id), `workflow id ${id} in the scrape`).toBe(false);
      for (const sample of after) expect(sample.name.startsWith('duraflow_'), sample.name).toBe(true);
      expect((await fetch(engine.metricsUrl!.replace('/metrics', '/other'))).status).toBe(404);
      // HEAD, as some health checks send it: GET's headers without the body.
      const head = await fetch(engine.metricsUrl!, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(head.headers.get('content-type')).toMatch(/^text\/plain/);
      expect(await head.text()).toBe('');
      const post = await fetch(engine.metricsUrl!, { method: 'POST' });
      expect([post.status, post.headers.get('allow')]).toEqual([405, 'GET, HEAD']);
    } finally {
      await engine.close();
    }
    // Nothing answers there any more, so the engine no longer says it does.
    expect(engine.metricsUrl).toBeUndefined();
  });

  it('counts a workflow parked once although its parking failed to be stored before', async () => {
    async function changing(ctx: WorkflowContext): Promise<string> {
      await ctx.activities<Fixtures>().echo('v1');
      return ctx.waitForEvent('go');
    }
    const v1 = await startEngine(db, { workflows: { changing }, activities: fixtureActivities });
    try {
      await v1.startWorkflow(changing, undefined, { workflowId: 'to-park' });
      await waitFor(async () => (await v1.inspect('to-park')).waitingOn.events.length > 0, 'the wait');
    } finally {
      await v1.close();
    }
    // The parking's write (the error on the workflow's row) fails for good until the trigger goes:
    // each rebuild parks the workflow again, and only the stored parking is one.
    const s = `"${db.schema}"`;
    await db.query(`CREATE FUNCTION ${s}.refuse_parking() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'not yet'; END $$`);
    await db.query(
      `CREATE TRIGGER refuse_parking BEFORE UPDATE ON ${s}.workflows FOR EACH ROW WHEN (NEW.error IS NOT NULL) EXECUTE FUNCTION ${s}.refuse_parking()`,
    );
    async function changed(ctx: WorkflowContext): Promise<string> {
      await ctx.activities<Fixtures>().double(1);
      return ctx.waitForEvent('go');
    }
    const v2 = await startEngine(db, { workflows: { changing: changed }, activities: fixtureActivities });
    try {
      await v2.sendEvent('to-park', 'go');
      await waitFor(async () => (await readMetric(v2, MetricName.WalFlushErrors)) >= 2, 'two parkings refused');
      await db.query(`DROP TRIGGER refuse_parking ON ${s}.workflows`);
      await waitFor(async () => (await readMetric(v2, MetricName.NonDeterminismErrors)) > 0, 'the parking stored');
      expect((await v2.inspect('to-park')).error).toMatchObject({ name: 'NonDeterminismError' });
      expect(await readMetric(v2, MetricName.NonDeterminismErrors)).toBe(1);
    } finally {
      await v2.close();
    }
  });

  /**
   * Runs a workflow that fails on one activity's failure while an attempt of `hang` still runs,
   * with `hangPolicy`; returns the metrics once that attempt has timed out, and the history.
   */
  async function afterAttemptOutlivingWorkflow(hangPolicy: RetryPolicy): Promise<{ samples: Sample[]; history: HistoryEvent[] }> {
    async function failsFast(ctx: WorkflowContext): Promise<unknown> {
      const { alwaysFails } = ctx.activities<Fixtures>({ retry: { maxAttempts: 1 } });
      const { hang } = ctx.activities<Fixtures>({ retry: hangPolicy, startToCloseTimeoutMs: 200 });
      // The first failure fails the workflow; the hanging attempt times out after that.
      return Promise.all([alwaysFails(), hang(null)]);
    }
    const engine = await startEngine(db, { workflows: { failsFast }, activities: fixtureActivities });
    try {
      const handle = await engine.startWorkflow(failsFast, undefined);
      await expect(handle.result()).rejects.toMatchObject({ code: 'DURAFLOW_WORKFLOW_FAILED' });
      await waitFor(async () => total(await scrapeRegistry(engine), MetricName.ActivityAttempts, { activity: 'hang' }) === 1, 'the hanging attempt to time out');
      const samples = await scrapeRegistry(engine);
      const state = await engine.inspect(handle.workflowId);
      expect(state.waitingOn.activities).toEqual([]);
      expect(total(samples, MetricName.TimersArmed)).toBe(0);
      return { samples, history: state.history };
    } finally {
      await engine.close();
    }
  }

  it('counts no retry for an attempt that fails after its workflow ended', async () => {
    const { samples } = await afterAttemptOutlivingWorkflow({ initialIntervalMs: 1 });
    // Its workflow has ended: nothing runs it again, so it is no retry.
    expect(total(samples, MetricName.ActivityRetries, { activity: 'hang' })).toBe(0);
  });

  it('counts no final failure for an attempt that fails for good after its workflow ended', async () => {
    const { samples, history } = await afterAttemptOutlivingWorkflow({ maxAttempts: 1 });
    // The failure that failed the workflow is stored; the later one is taken by no workflow.
    expect(total(samples, MetricName.ActivityFailures, { activity: 'alwaysFails' })).toBe(1);
    expect(total(samples, MetricName.ActivityFailures, { activity: 'hang' })).toBe(0);
    // The attempt did run, in a thread, and failed: it counts as one, under the outcome it had.
    expect(total(samples, `${MetricName.ActivityRunDuration}_count`, { activity: 'hang', outcome: 'failed' })).toBe(1);
    expect(history.filter((e) => e.type === 'ActivityFailed')).toHaveLength(1);
  });

  it('keeps two engines in one process in separate registries', async () => {
    const a = await startEngine(db, { workflows: { loaded }, activities: fixtureActivities, metrics: { port: 0 } });
    const b = await startEngine(other, { workflows: { loaded }, activities: fixtureActivities, metrics: { port: 0 } });
    try {
      await Promise.all([1, 2].map(async (n) => (await a.startWorkflow(loaded, { n })).result()));
      await Promise.all([1, 2, 4, 5, 7].map(async (n) => (await b.startWorkflow(loaded, { n })).result()));
      expect(a.metricsUrl).not.toBe(b.metricsUrl);
      expect(total(await scrape(a.metricsUrl!), MetricName.WorkflowsCompleted)).toBe(2);
      expect(total(await scrape(b.metricsUrl!), MetricName.WorkflowsCompleted)).toBe(5);
      // The registry is also usable directly, e.g. on a host app's own route.
      expect(await b.metrics.getSingleMetricAsString(MetricName.WorkflowsCompleted)).toMatch(/workflow="loaded"} 5/);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
