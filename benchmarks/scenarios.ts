import { randomBytes } from 'node:crypto';
import http from 'node:http';

import pg from 'pg';

import { createEngine, type Engine, MetricName } from 'duraflow';

import { type CpuProfile, startCpuProfile } from './profile.js';
import { Progress } from './progress.js';
import { histogramQuantile, middleRate, percentiles, shareWithin } from './stats.js';
import { type CpuUse, cpuMeter } from './system.js';
import { step } from './activities.js';
import { fanout, parked, steps, timers } from './workflows.js';

/** Options shared by every scenario. */
export interface BenchOptions {
  database: string | undefined;
  workflows: number;
  /** Closed-loop scenarios: at most this many workflows at a time, each that ends replaced; undefined: all at once. */
  concurrency?: number | undefined;
  steps: number;
  fanout: number;
  timers: number;
  activityThreads: number;
  metrics: boolean;
  /** Open-loop arrivals per second for `latency`; 0 = one workflow at a time. */
  rate: number;
  maxCachedWorkflows: number | undefined;
  /** Workflows run before each measured run; undefined: see `warmUpWorkflows`. */
  warmUp: number | undefined;
  /** Run the activities on the engine thread instead of worker threads. */
  inline: boolean;
  quiet: boolean;
  /** Profiles the main thread during the measured run (not the warm-up) and hands the profile here. */
  onProfile?: (profile: CpuProfile) => void;
}

/** Every figure one run produced. */
export type RunResult = Record<string, number | string | undefined>;

/** History rows as the engine stored them, one array per column (times in epoch ms). */
export interface HistoryColumns {
  workflowId: string[];
  seq: number[];
  activation: number[];
  type: string[];
  commandId: (number | null)[];
  payload: (string | null)[];
  at: number[];
}

interface Counters {
  events: number;
  flushes: number;
  stepBuckets: Bucket[];
  flushBuckets: Bucket[];
}

/** A histogram's cumulative count up to its bound `le` (seconds). */
interface Bucket {
  le: number;
  count: number;
}

async function readCounters(engine: Engine): Promise<Counters> {
  const metrics = await engine.metrics.getMetricsAsJSON();
  const sum = (name: string): number =>
    (metrics.find((m) => m.name === name)?.values ?? []).reduce((s, v) => s + Number(v.value), 0);
  // Summed over the histogram's labels (one per workflow name).
  const buckets = (name: string): Bucket[] => {
    const byBound = new Map<number, number>();
    for (const v of metrics.find((m) => m.name === name)?.values ?? []) {
      const le = (v.labels as { le?: string | number }).le;
      if (le === undefined || !String((v as { metricName?: string }).metricName ?? '').endsWith('_bucket')) continue;
      const bound = le === '+Inf' ? Infinity : Number(le);
      byBound.set(bound, (byBound.get(bound) ?? 0) + Number(v.value));
    }
    return [...byBound].sort((x, y) => x[0] - y[0]).map(([le, count]) => ({ le, count }));
  };
  return {
    events: sum(MetricName.EventsWritten),
    flushes: sum(MetricName.WalFlushes),
    stepBuckets: buckets(MetricName.WorkflowStepDuration),
    flushBuckets: buckets(MetricName.WalFlushDuration),
  };
}

/**
 * p50/p95/p99 of the workflows' end-to-end latencies (ms), and of the steps and the flushes
 * between two readings: a step's time is mostly its wait for a flush and that flush's commit.
 */
function latencyFigures(latencies: number[], before: Counters, after: Counters): RunResult {
  const wf = percentiles(latencies);
  const step = between(before.stepBuckets, after.stepBuckets);
  const flush = between(before.flushBuckets, after.flushBuckets);
  return {
    workflowP50Ms: wf.p50,
    workflowP95Ms: wf.p95,
    workflowP99Ms: wf.p99,
    stepP50Ms: histogramQuantile(step, 0.5) * 1000,
    stepP95Ms: histogramQuantile(step, 0.95) * 1000,
    stepP99Ms: histogramQuantile(step, 0.99) * 1000,
    // The p99 target's bound is a bucket's, so this share is exact where the percentiles are
    // interpolated inside their buckets.
    stepsWithin10MsPct: shareWithin(step, 0.01),
    flushP50Ms: histogramQuantile(flush, 0.5) * 1000,
    flushP99Ms: histogramQuantile(flush, 0.99) * 1000,
  };
}

/** A histogram's counts between two readings. */
function between(before: readonly Bucket[], after: readonly Bucket[]): Bucket[] {
  return after.map((b, i) => ({ le: b.le, count: b.count - (before[i]?.count ?? 0) }));
}

/** An engine on a fresh schema (Postgres) or a fresh in-memory embedded database. */
async function openEngine(options: BenchOptions): Promise<{
  engine: Engine;
  /** The last `limit` history rows the engine wrote, in about the order it wrote them (Postgres only). */
  readHistory(limit: number): Promise<HistoryColumns>;
  dispose(): Promise<void>;
}> {
  const schema = `bench_${randomBytes(4).toString('hex')}`;
  const engine = await createEngine({
    ...(options.database ? { database: options.database } : { dataDir: 'memory://' }),
    schema,
    workflows: { steps, fanout, timers, parked },
    ...(options.inline ? { inlineActivities: { step } } : { activities: new URL('./activities.js', import.meta.url) }),
    activityThreads: options.activityThreads,
    maxConnections: 4,
    ...(options.metrics ? { metrics: { port: 0 } } : {}),
    ...(options.maxCachedWorkflows !== undefined ? { maxCachedWorkflows: options.maxCachedWorkflows } : {}),
  });
  return {
    engine,
    async readHistory(limit) {
      const client = new pg.Client({ connectionString: options.database });
      await client.connect();
      try {
        // The engine's own table and columns (this is the bench's scratch schema): the newest rows,
        // the measured run's (the warm-up's came before). They come in about the order the engine
        // committed them, by time: a flush has a row or two from each of hundreds of workflows,
        // scattered over the history's key, not whole workflows in key order.
        const { rows } = await client.query<{ c: HistoryColumns }>(
          `SELECT json_build_object('workflowId', coalesce(array_agg(workflow_id), '{}'), 'seq', coalesce(array_agg(seq), '{}'),
                  'activation', coalesce(array_agg(activation), '{}'), 'type', coalesce(array_agg(type), '{}'),
                  'commandId', coalesce(array_agg(command_id), '{}'), 'payload', coalesce(array_agg(payload), '{}'),
                  'at', coalesce(array_agg(extract(epoch FROM at) * 1000), '{}')) AS c
           FROM (SELECT * FROM (SELECT * FROM "${schema}".history ORDER BY at DESC, workflow_id DESC, seq DESC LIMIT $1) newest
                 ORDER BY at, workflow_id, seq) h`,
          [limit],
        );
        return rows[0]!.c;
      } finally {
        await client.end();
      }
    },
    async dispose() {
      await engine.close();
      if (!options.database) return;
      const pool = new pg.Pool({ connectionString: options.database, max: 1 });
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    },
  };
}

/** A scrape loop like Prometheus's (every second), so serving metrics has its real cost. */
/**
 * One scrape over HTTP, as Prometheus makes it. `node:http`, not `fetch`: loading fetch's
 * implementation costs a few hundred ms of this thread on first use, which is the harness's
 * cost, not the engine's.
 */
function scrape(url: string): Promise<void> {
  return new Promise((resolve) => {
    http
      .get(url, (res) => {
        res.resume();
        res.on('end', resolve);
      })
      .on('error', () => resolve());
  });
}

function scraper(engine: Engine): () => void {
  if (!engine.metricsUrl) return () => undefined;
  const url = engine.metricsUrl;
  const timer = setInterval(() => void scrape(url), 1000);
  return () => clearInterval(timer);
}

/**
 * Runs `count` workflows and waits for all of them: all started at once, or (`concurrency`) at
 * most that many at a time, each that ends replaced by the next. Returns the wall time and each
 * workflow's end-to-end latency (startWorkflow call to result), in ms.
 */
export async function runBatch(
  count: number,
  start: (i: number) => ReturnType<Engine['startWorkflow']>,
  progress?: Progress,
  concurrency = count,
): Promise<{ seconds: number; latencies: number[] }> {
  const latencies: number[] = new Array(count);
  let next = 0;
  const began = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      for (let i = next++; i < count; i = next++) {
        const t0 = performance.now();
        const handle = await start(i);
        await handle.result();
        latencies[i] = performance.now() - t0;
        progress?.tick();
      }
    }),
  );
  return { seconds: (performance.now() - began) / 1000, latencies };
}

/** Activities the default warm-up runs before a throughput run. */
const WARM_UP_ACTIVITIES = 100_000;

/**
 * Workflows to run before a throughput run, so that it measures the engine's sustained pace: each
 * run has new activity threads, whose JIT starts cold, and on 2 cores the compiler's and the
 * collector's threads take CPU the engine and Postgres need until it has settled (the A/B is in
 * benchmarks/README.md). Workflows without activities (timers) need no more than 500.
 */
function warmUpWorkflows(activitiesPerWorkflow: number): number {
  return activitiesPerWorkflow === 0 ? 500 : Math.max(500, Math.ceil(WARM_UP_ACTIVITIES / activitiesPerWorkflow));
}

/** Closed-loop throughput of a workload: W workflows started together. */
async function throughput(
  options: BenchOptions,
  label: string,
  start: (engine: Engine, i: number) => ReturnType<Engine['startWorkflow']>,
  activitiesPerWorkflow: number,
  onHistory?: (rows: HistoryColumns) => void,
): Promise<RunResult> {
  const { engine, readHistory, dispose } = await openEngine(options);
  const stopScraping = scraper(engine);
  try {
    await runBatch(options.warmUp ?? warmUpWorkflows(activitiesPerWorkflow), (i) => start(engine, i));
    const before = await readCounters(engine);
    const cpu = await cpuMeter();
    const profiler = options.onProfile && (await startCpuProfile());
    const progress = options.quiet ? undefined : new Progress(label, options.workflows);
    const { seconds, latencies } = await runBatch(options.workflows, (i) => start(engine, i), progress, options.concurrency);
    progress?.stop();
    if (profiler) options.onProfile!(await profiler.stop());
    const usage = await cpu.stop();
    const after = await readCounters(engine);
    const events = after.events - before.events;
    const flushes = after.flushes - before.flushes;
    // As many rows as the measured run committed (every steps workflow writes the same shape).
    const rows = options.database ? await readHistory(events) : undefined;
    if (onHistory && rows) onHistory(rows);
    return {
      system: 'duraflow',
      scenario: label,
      workflows: options.workflows,
      seconds,
      workflowsPerSec: options.workflows / seconds,
      activityStepsPerSec: (options.workflows * activitiesPerWorkflow) / seconds,
      eventsPerSec: events / seconds,
      ...(rows ? sustainedFigures(rows, activitiesPerWorkflow) : {}),
      flushesPerSec: flushes / seconds,
      eventsPerFlush: events / Math.max(1, flushes),
      ...latencyFigures(latencies, before, after),
      engineCpuPct: usage.engineCpuPct,
      mainThreadBusyPct: usage.mainThreadBusyPct,
      // Main-thread time per activity step: the engine's cost, less sensitive to a noisy machine.
      mainThreadUsPerStep:
        activitiesPerWorkflow > 0
          ? (usage.mainThreadBusyPct / 100) * seconds * 1e6 / (options.workflows * activitiesPerWorkflow)
          : undefined,
      databaseCpuPct: usage.databaseCpuPct,
      ...(activitiesPerWorkflow > 0 ? cpuPerStep(usage, seconds, options.workflows * activitiesPerWorkflow) : {}),
      // Beside the bare insert's per row (the limit): what the engine's statements cost the database.
      databaseCpuUsPerEvent:
        usage.databaseCpuPct === undefined || events === 0 ? undefined : ((usage.databaseCpuPct / 100) * seconds * 1e6) / events,
    };
  } finally {
    stopScraping();
    await dispose();
  }
}

/**
 * The pace of the run's middle (from the 10th to the 90th percentile of the times of the history
 * rows it committed): of all its events, and of its activity steps (their ActivityCompleted
 * events). A run that starts every workflow at once creates them all before any activity returns
 * and completes them all at the end: its middle is activity steps alone, and its pace an upper
 * bound on what a steady mix of starts, steps and completions would reach. With `concurrency`
 * well below the workflows, starts and completions spread over the run, and middle and average
 * agree. The gap to the whole run's average shows how much of a run went to its start and end.
 */
function sustainedFigures(rows: HistoryColumns, activitiesPerWorkflow: number): RunResult {
  const steps = activitiesPerWorkflow > 0 ? rows.at.filter((_, i) => rows.type[i] === 'ActivityCompleted') : [];
  return {
    sustainedEventsPerSec: middleRate(rows.at),
    sustainedStepsPerSec: steps.length > 0 ? middleRate(steps) : undefined,
  };
}

/**
 * CPU time per activity step, on a core: the engine's process (and how its threads share it) and
 * the database's. Unlike wall-clock figures, these barely move when the machine is busy, so two
 * builds compare by them; their sum is what a step costs the machine.
 */
function cpuPerStep(usage: CpuUse, seconds: number, stepCount: number): RunResult {
  const perStep = (cpuSeconds: number | undefined): number | undefined =>
    cpuSeconds === undefined ? undefined : (cpuSeconds * 1e6) / stepCount;
  const engineSeconds = (usage.engineCpuPct / 100) * seconds;
  const databaseSeconds = usage.databaseCpuPct === undefined ? undefined : (usage.databaseCpuPct / 100) * seconds;
  const threads = usage.threadCpuSeconds;
  return {
    engineCpuUsPerStep: perStep(engineSeconds),
    mainThreadCpuUsPerStep: perStep(threads?.main),
    v8BackgroundCpuUsPerStep: perStep(threads?.v8Background),
    activityThreadsCpuUsPerStep: perStep(threads?.activityAndOther),
    databaseCpuUsPerStep: perStep(databaseSeconds),
    machineCpuUsPerStep: databaseSeconds === undefined ? undefined : perStep(engineSeconds + databaseSeconds),
  };
}

const runTag = randomBytes(4).toString('hex');
let nextWorkflow = 0;

/** `onHistory` receives as many of the engine's history rows as the measured run committed. */
export function runSteps(options: BenchOptions, onHistory?: (rows: HistoryColumns) => void): Promise<RunResult> {
  return throughput(
    options,
    'steps',
    // Business-key ids, unique across the warm-up and measured batches without a random draw per
    // workflow (that would be the harness's cost on the engine's thread).
    (e) => e.startWorkflow(steps, { steps: options.steps }, { workflowId: `s-${runTag}-${nextWorkflow++}` }),
    options.steps,
    onHistory,
  );
}

export function runFanout(options: BenchOptions): Promise<RunResult> {
  return throughput(options, 'fanout', (e) => e.startWorkflow(fanout, { fanout: options.fanout }), options.fanout);
}

export function runTimers(options: BenchOptions): Promise<RunResult> {
  return throughput(options, 'timers', (e) => e.startWorkflow(timers, { timers: options.timers, ms: 10 }), 0);
}

/**
 * Runs `warmUp + count` workflows arriving open-loop, one every 1000/`rate` ms whether or not
 * earlier ones have finished, as one stream: `begin` is awaited just before the first measured one
 * arrives. A measured one's latency runs from when it was due, however late the harness got to it.
 */
export async function openLoop(
  { rate, warmUp, count }: { rate: number; warmUp: number; count: number },
  run: () => Promise<void>,
  begin: () => Promise<void>,
  onMeasured?: () => void,
): Promise<{ began: number; latencies: number[] }> {
  const interval = 1000 / rate;
  const first = performance.now();
  const latencies: number[] = [];
  const runs: Promise<void>[] = [];
  for (let i = 0; i < warmUp + count; i++) {
    // Arrivals keep to their times, so time spent in `begin` counts against those due meanwhile.
    if (i === warmUp) await begin();
    const due = first + i * interval;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    // Late, it is timed from when it was due; early (by less than the wait above skips), from now.
    const from = Math.min(due, performance.now());
    const done = run();
    runs.push(
      i < warmUp
        ? done
        : done.then(() => {
            latencies.push(performance.now() - from);
            onMeasured?.();
          }),
    );
  }
  await Promise.all(runs);
  return { began: first + warmUp * interval, latencies };
}

/**
 * How long an open-loop latency run arrives at its rate before it measures, unless `--warm-up`
 * says how many workflows: on 2-core machines the engine took one to two seconds to settle after
 * a warm-up burst or from idle (benchmarks/README.md, the History).
 */
const OPEN_LOOP_WARM_UP_SECONDS = 5;

/**
 * End-to-end latency of S-step workflows: one at a time (rate 0), or arriving open-loop at
 * `rate` per second regardless of how fast earlier ones finish.
 *
 * The open loop warms up at its own rate, one stream of arrivals whose measured part begins at
 * the first measured workflow: a warm-up burst would leave the engine settling from it well into
 * the run (its flushes big and slow for a second or two) and a run starting from idle would
 * measure the ramp, where the question is the steady state at that rate.
 */
export async function runLatency(options: BenchOptions): Promise<RunResult> {
  const { engine, dispose } = await openEngine(options);
  const stopScraping = scraper(engine);
  try {
    const run = async (): Promise<void> => {
      await (await engine.startWorkflow(steps, { steps: options.steps })).result();
    };
    const one = async (): Promise<number> => {
      const started = performance.now();
      await run();
      return performance.now() - started;
    };
    // What the measured part reads at its start.
    const measure = async () => ({
      before: await readCounters(engine),
      cpu: await cpuMeter(),
      profiler: options.onProfile && (await startCpuProfile()),
      progress: options.quiet ? undefined : new Progress('latency', options.workflows),
    });
    let latencies: number[] = [];
    let measured: Awaited<ReturnType<typeof measure>> | undefined;
    let began: number;
    let warmUp: number | undefined;
    if (options.rate <= 0) {
      // A warm-up (one-at-a-time latency waits on commits, not on the JIT), then a few alone.
      await runBatch(options.warmUp ?? 500, () => engine.startWorkflow(steps, { steps: options.steps }));
      for (let i = 0; i < 20; i++) await run();
      measured = await measure();
      began = performance.now();
      for (let i = 0; i < options.workflows; i++) {
        latencies.push(await one());
        measured.progress?.tick();
      }
    } else {
      warmUp = options.warmUp ?? Math.ceil(OPEN_LOOP_WARM_UP_SECONDS * options.rate);
      const begin = async (): Promise<void> => {
        measured = await measure();
      };
      const arrivals = await openLoop({ rate: options.rate, warmUp, count: options.workflows }, run, begin, () => measured?.progress?.tick());
      ({ began, latencies } = arrivals);
    }
    // Set in either branch: --workflows is at least 1.
    const { before, cpu, profiler, progress } = measured!;
    progress?.stop();
    const seconds = (performance.now() - began) / 1000;
    if (profiler) options.onProfile!(await profiler.stop());
    const usage = await cpu.stop();
    const after = await readCounters(engine);
    // The measured workflows' steps. In the open loop the warm-up's last workflows end inside the
    // window, their CPU counted and their steps not: CPU per step reads about 1% high.
    const stepCount = options.workflows * options.steps;
    const flushes = after.flushes - before.flushes;
    return {
      system: 'duraflow',
      scenario: options.rate > 0 ? `latency@${options.rate}/s` : 'latency@1-at-a-time',
      workflows: options.workflows,
      // Open loop: the workflows that arrived at the same rate just before the measured ones.
      ...(warmUp === undefined ? {} : { warmUpWorkflows: warmUp }),
      seconds,
      workflowsPerSec: options.workflows / seconds,
      ...latencyFigures(latencies, before, after),
      flushesPerSec: flushes / seconds,
      eventsPerFlush: (after.events - before.events) / Math.max(1, flushes),
      engineCpuPct: usage.engineCpuPct,
      mainThreadBusyPct: usage.mainThreadBusyPct,
      databaseCpuPct: usage.databaseCpuPct,
      ...cpuPerStep(usage, seconds, stepCount),
    };
  } finally {
    stopScraping();
    await dispose();
  }
}

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

/**
 * RSS and heap per parked workflow for one actor-cache size (undefined = unbounded). Run it in a
 * fresh process per size (the harness does), so one measurement's memory is not the next's
 * baseline.
 */
export async function runMemoryOnce(options: BenchOptions, bound: number | undefined): Promise<RunResult> {
  gc();
  const rss0 = process.memoryUsage().rss;
  const { engine, dispose } = await openEngine({ ...options, maxCachedWorkflows: bound ?? Number.MAX_SAFE_INTEGER });
  try {
    gc();
    const rssEngine = process.memoryUsage().rss;
    const heap0 = process.memoryUsage().heapUsed;
    const progress = options.quiet ? undefined : new Progress(`memory (cache ${bound ?? 'unbounded'})`, options.workflows);
    const began = performance.now();
    const chunk = 2000;
    for (let i = 0; i < options.workflows; i += chunk) {
      const n = Math.min(chunk, options.workflows - i);
      await Promise.all(Array.from({ length: n }, () => engine.startWorkflow(parked, undefined)));
      progress?.tick(n);
    }
    // Wait until every workflow has committed its timer and is parked on it (with the cache
    // bounded, starts wait for room first).
    const depth = async (name: string): Promise<number> =>
      Number((await engine.metrics.getSingleMetric(name)?.get())?.values[0]?.value ?? 0);
    const settled = async (): Promise<boolean> =>
      (await depth(MetricName.WalPendingEvents)) === 0 &&
      (await depth(MetricName.MailboxMessages)) === 0 &&
      (await depth(MetricName.WorkflowsWaitingForRoom)) === 0 &&
      (await depth(MetricName.TimersArmed)) >= options.workflows;
    const deadline = Date.now() + 600_000;
    while (!(await settled())) {
      if (Date.now() > deadline) {
        throw new Error(
          `memory scenario: not every workflow parked within 10 minutes (timers armed ${await depth(MetricName.TimersArmed)}, ` +
            `waiting for room ${await depth(MetricName.WorkflowsWaitingForRoom)}, pending events ${await depth(MetricName.WalPendingEvents)})`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    progress?.stop();
    const seconds = (performance.now() - began) / 1000;
    gc();
    const { rss, heapUsed } = process.memoryUsage();
    return {
      system: 'duraflow',
      scenario: `memory (cache ${bound ?? 'unbounded'})`,
      workflows: options.workflows,
      seconds,
      actorsInMemory: await depth(MetricName.ActorsInMemory),
      timersArmed: await depth(MetricName.TimersArmed),
      rssMiB: rss / 2 ** 20,
      rssMiBBeforeEngine: rss0 / 2 ** 20,
      rssBytesPerWorkflow: (rss - rssEngine) / options.workflows,
      heapBytesPerWorkflow: (heapUsed - heap0) / options.workflows,
    };
  } finally {
    await dispose();
  }
}
