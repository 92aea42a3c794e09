/**
 * The load harness: `npm run bench -- [options]`. Prints a table on stdout, a progress bar on
 * stderr, and with --json every figure plus versions, machine and options.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs, promisify } from 'node:util';

import pg from 'pg';

import { measureLatencyFloor } from './baselines/latency-floor.js';
import { measureInsertLimit } from './baselines/pg-limit.js';
import { type CpuProfile, type ProfileSummary, summarizeProfile } from './profile.js';
import {
  type BenchOptions,
  type HistoryColumns,
  type RunResult,
  runFanout,
  runLatency,
  runMemoryOnce,
  runSteps,
  runTimers,
} from './scenarios.js';
import { median, round } from './stats.js';
import { machine } from './system.js';

const USAGE = `usage: npm run bench -- [options]
  --scenario steps|fanout|timers|latency|memory   (default steps)
  --database URL        Postgres to run on (default: the embedded database, in memory)
  --workflows N         workflows per run (default 2000; memory: 100000; latency: 200)
  --concurrency C       steps, fanout, timers: at most C workflows at a time, each one that ends
                        replaced by the next, so starts and completions spread over the run
                        (default: all of them at once); DBOS runs the same way with --compare;
                        latency --rate half: the maximum run's (default 2000)
  --steps S             sequential activities per workflow (default 10)
  --fanout F            parallel activities per workflow (default 20)
  --timers T            timers per workflow (default 5)
  --rate R|half         latency: arrivals per second, 0 = one at a time (default 0); half: before each
                        run, measure the maximum (a steps run of 4C workflows, C at a time, of the
                        same S steps) and arrive at half its workflows/s
  --activity-threads N  activity worker threads (default 2)
  --max-cached N        maxCachedWorkflows (default the engine's 10000; memory: the bounded run's, default 1000)
  --metrics             serve /metrics during the run and scrape it every second
  --inline              run the activities on the engine thread (no worker-thread hop)
  --compare             also run the baselines and DBOS (steps, and latency one at a time; Postgres only):
                        steps: the bare-insert limit; latency: the bare floor of commits and thread hops
  --warm-up N           workflows run before each measured run (default: steps and fanout, enough for
                        100,000 activities; timers and latency one at a time, 500; latency at a rate:
                        5 s of arrivals at that rate, which go straight on into the measured ones)
  --repeat N            runs per side, alternating; medians are reported (default 1; 3 with --compare)
  --json FILE           write every figure to FILE
  --profile FILE        CPU profile of the engine's main thread during the first measured run, written
                        to FILE (.cpuprofile: a flame graph in Chrome DevTools or speedscope) and summed
                        up after the table and in the JSON (not memory; a profiled run is a little slower)`;

const run = promisify(execFile);

const FLAGS = {
  scenario: { type: 'string', default: 'steps' },
  database: { type: 'string' },
  workflows: { type: 'string' },
  concurrency: { type: 'string' },
  steps: { type: 'string', default: '10' },
  fanout: { type: 'string', default: '20' },
  timers: { type: 'string', default: '5' },
  rate: { type: 'string', default: '0' },
  'activity-threads': { type: 'string', default: '2' },
  'max-cached': { type: 'string' },
  metrics: { type: 'boolean', default: false },
  inline: { type: 'boolean', default: false },
  compare: { type: 'boolean', default: false },
  repeat: { type: 'string' },
  'warm-up': { type: 'string' },
  json: { type: 'string' },
  profile: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function refuse(problem: string): never {
  console.error(`${problem}\n${USAGE}`);
  process.exit(2);
}

interface Parsed {
  options: BenchOptions;
  scenario: string;
  compare: boolean;
  repeat: number;
  /** latency --rate half: each run arrives at half the maximum measured just before it. */
  halfOfMaximum: boolean;
  json?: string;
  profile?: string;
}

function parse(): Parsed {
  // parseArgs throws on an unknown flag or a missing value: a usage error, not a crash.
  const { values } = (() => {
    try {
      return parseArgs({ options: FLAGS });
    } catch (error) {
      return refuse((error as Error).message);
    }
  })();
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const scenario = values.scenario!;
  if (!['steps', 'fanout', 'timers', 'latency', 'memory'].includes(scenario)) refuse(`unknown --scenario ${JSON.stringify(scenario)}`);
  const defaultWorkflows = scenario === 'memory' ? 100_000 : scenario === 'latency' ? 200 : 2000;
  // Counts are whole and at least 1: a zero ran nothing and printed zeros, a fraction ran more steps
  // than it reported.
  const int = (name: string, v: string | undefined, fallback: number): number => {
    const n = v === undefined ? fallback : Number(v);
    if (v === '' || !Number.isInteger(n) || n < 1) refuse(`--${name} must be a whole number of at least 1, got ${JSON.stringify(v)}`);
    return n;
  };
  const halfOfMaximum = values.rate === 'half';
  const rate = halfOfMaximum ? 0 : Number(values.rate);
  if (values.rate === '' || !Number.isFinite(rate) || rate < 0) {
    refuse(`--rate must be a number of workflows per second >= 0, or half, got ${JSON.stringify(values.rate)}`);
  }
  const isOpenLoop = rate > 0 || halfOfMaximum;
  if (isOpenLoop && scenario !== 'latency') refuse(`--rate is for the latency scenario, not ${scenario}`);
  if (values.compare && !(scenario === 'steps' || (scenario === 'latency' && !isOpenLoop))) {
    refuse(`--compare has baselines for steps and for latency one at a time (no --rate), not for ${scenario}${isOpenLoop ? ' at a rate' : ''}`);
  }
  if (values.concurrency !== undefined && !['steps', 'fanout', 'timers'].includes(scenario) && !halfOfMaximum) {
    refuse(`--concurrency is for the closed-loop scenarios (steps, fanout, timers) and latency's --rate half, not ${scenario}${scenario === 'latency' ? ' without it' : ''}`);
  }
  if (values.profile !== undefined && (values.profile === '' || scenario === 'memory')) {
    refuse(values.profile === '' ? '--profile needs a file to write' : '--profile profiles this process, and the memory scenario runs in child processes');
  }
  return {
    scenario,
    compare: values.compare!,
    halfOfMaximum,
    repeat: int('repeat', values.repeat, values.compare ? 3 : 1),
    ...(values.json ? { json: values.json } : {}),
    ...(values.profile ? { profile: values.profile } : {}),
    options: {
      database: values.database,
      workflows: int('workflows', values.workflows, defaultWorkflows),
      concurrency: values.concurrency === undefined ? undefined : int('concurrency', values.concurrency, 1),
      steps: int('steps', values.steps, 10),
      fanout: int('fanout', values.fanout, 20),
      timers: int('timers', values.timers, 5),
      rate,
      activityThreads: int('activity-threads', values['activity-threads'], 2),
      metrics: values.metrics!,
      inline: values.inline!,
      maxCachedWorkflows: values['max-cached'] === undefined ? undefined : int('max-cached', values['max-cached'], 1000),
      warmUp: values['warm-up'] === undefined ? undefined : int('warm-up', values['warm-up'], 500),
      quiet: false,
    },
  };
}

/** `onHistory` (steps only) receives the history rows the measured run committed. */
async function runScenario(
  scenario: string,
  options: BenchOptions,
  onHistory?: (rows: HistoryColumns) => void,
): Promise<RunResult[]> {
  switch (scenario) {
    case 'steps':
      return [await runSteps(options, onHistory)];
    case 'fanout':
      return [await runFanout(options)];
    case 'timers':
      return [await runTimers(options)];
    case 'latency':
      return [await runLatency(options)];
    default: {
      // One fresh process per cache size: a process's first run would be the next one's baseline.
      const results: RunResult[] = [];
      for (const bound of ['unbounded', String(options.maxCachedWorkflows ?? 1000)]) {
        const args = [
          '--expose-gc',
          process.argv[1]!,
          '--memory-child',
          bound,
          '--workflows',
          String(options.workflows),
          ...(options.database ? ['--database', options.database] : []),
        ];
        const { stdout } = await run(process.execPath, args, { maxBuffer: 1 << 20, timeout: 900_000 });
        results.push(JSON.parse(stdout.trim().split('\n').at(-1)!) as RunResult);
      }
      return results;
    }
  }
}

/** Slots of the maximum run of `latency --rate half` unless `--concurrency` says: the default `steps` batch's. */
const MAXIMUM_RUN_CONCURRENCY = 2000;

/**
 * The maximum pace of the latency scenario's workflow (S sequential steps): a closed-loop `steps`
 * run of 4C workflows, C at a time, each that ends replaced, so that its average is a steady
 * mix's rather than a burst's start and end.
 */
async function measureMaximum(options: BenchOptions): Promise<RunResult> {
  const concurrency = options.concurrency ?? MAXIMUM_RUN_CONCURRENCY;
  const result = await runSteps({ ...options, workflows: 4 * concurrency, concurrency, onProfile: undefined });
  return { ...result, scenario: 'steps (maximum)' };
}

async function runDbos(options: BenchOptions, mode: 'throughput' | 'latency'): Promise<RunResult> {
  const script = new URL('./baselines/dbos-steps.js', import.meta.url).pathname;
  // A system database of its own, so two runs on one server do not drop each other's.
  const systemDatabase = `dbos_bench_${randomBytes(4).toString('hex')}`;
  const args = [script, '--database', options.database!, '--system-database', systemDatabase, '--steps', String(options.steps), '--mode', mode];
  if (mode === 'throughput') {
    args.push('--workflows', String(options.workflows));
    if (options.concurrency !== undefined) args.push('--concurrency', String(options.concurrency));
  }
  else args.push('--runs', String(options.workflows));
  const { stdout } = await run(process.execPath, args, { maxBuffer: 1 << 20, timeout: 600_000 });
  const line = stdout.trim().split('\n').at(-1)!;
  const result = JSON.parse(line) as Record<string, number | string>;
  return mode === 'throughput'
    ? { ...result, system: 'dbos', scenario: 'steps', activityStepsPerSec: result.stepsPerSec }
    : { ...result, system: 'dbos', scenario: 'latency@1-at-a-time', workflowP50Ms: result.p50Ms, workflowP95Ms: result.p95Ms, workflowP99Ms: result.p99Ms };
}

async function versions(database: string | undefined): Promise<Record<string, string>> {
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
    dependencies: Record<string, string>;
  };
  const out: Record<string, string> = {
    duraflow: pkg.version,
    node: process.version,
    pglite: pkg.dependencies['@electric-sql/pglite'] ?? '',
  };
  // Which build ran, when run from a git checkout (recordings are compared across builds).
  const commit = await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: new URL('../..', import.meta.url) }).catch(() => undefined);
  if (commit) out.commit = commit.stdout.trim();
  if (database) {
    const pool = new pg.Pool({ connectionString: database, max: 1 });
    const { rows } = await pool.query<{ server_version: string }>('SHOW server_version');
    const { rows: fsync } = await pool.query<{ fsync: string }>('SHOW fsync');
    out.postgres = rows[0]!.server_version;
    out.postgresFsync = fsync[0]!.fsync;
    await pool.end();
  }
  return out;
}

function medianOf(results: RunResult[]): RunResult {
  const first = results[0]!;
  const out: RunResult = {};
  for (const key of Object.keys(first)) {
    const values = results.map((r) => r[key]);
    out[key] = typeof first[key] === 'number' ? median(values.filter((v): v is number => typeof v === 'number')) : first[key];
  }
  return out;
}

function printTable(rows: RunResult[]): void {
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) => k !== 'system' && k !== 'scenario');
  const header = ['figure', ...rows.map((r) => `${r.system} ${r.scenario}`)];
  const lines = keys.map((k) => [k, ...rows.map((r) => (typeof r[k] === 'number' ? String(round(r[k] as number)) : String(r[k] ?? '')))]);
  const widths = header.map((_, i) => Math.max(...[header, ...lines].map((l) => l[i]!.length)));
  const fmt = (l: string[]): string => l.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(fmt(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const l of lines) console.log(fmt(l));
}

function printProfile(summary: ProfileSummary, file: string): void {
  console.log(
    `\nmain thread, first run (${summary.sampledMs} ms sampled, ${file}): garbage collector ${summary.garbageCollectorPct}%, ` +
      `idle ${summary.idlePct}%, V8 and Node outside JavaScript ${summary.programPct}%`,
  );
  console.log('self time by file:');
  for (const f of summary.files) console.log(`${String(f.pct).padStart(6)}%  ${f.file}`);
  console.log('self time by function:');
  for (const f of summary.functions) console.log(`${String(f.pct).padStart(6)}%  ${f.function}`);
}

/** The memory scenario's child: one cache size, one JSON line on stdout. */
async function memoryChild(): Promise<void> {
  const { values } = parseArgs({
    strict: false,
    options: { 'memory-child': { type: 'string' }, workflows: { type: 'string' }, database: { type: 'string' } },
  });
  const bound = values['memory-child'] === 'unbounded' ? undefined : Number(values['memory-child']);
  const result = await runMemoryOnce(
    {
      database: typeof values.database === 'string' ? values.database : undefined,
      workflows: Number(values.workflows ?? 100_000),
      steps: 0,
      fanout: 0,
      timers: 0,
      rate: 0,
      activityThreads: 1,
      metrics: false,
      inline: false,
      maxCachedWorkflows: bound,
      warmUp: undefined,
      quiet: true,
    },
    bound,
  );
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

async function main(): Promise<void> {
  if (process.argv.includes('--memory-child')) return memoryChild();
  const { options, scenario, compare, repeat, halfOfMaximum, json, profile: profileFile } = parse();
  if (compare && !options.database) refuse('--compare needs --database: the baselines run on a Postgres server');
  const runs: { duraflow: RunResult[]; maximum: RunResult[]; limit: RunResult[]; dbos: RunResult[] } = {
    duraflow: [],
    maximum: [],
    limit: [],
    dbos: [],
  };
  let profile: CpuProfile | undefined;
  for (let i = 0; i < repeat; i++) {
    // Alternate the sides so drift on a noisy machine hits all of them alike.
    let history: HistoryColumns | undefined;
    const onProfile = profileFile && i === 0 ? (p: CpuProfile) => (profile = p) : undefined;
    let runOptions: BenchOptions = { ...options, onProfile };
    let maximum: RunResult | undefined;
    if (halfOfMaximum) {
      // Measured afresh before each run: on a noisy machine the maximum of an hour ago may be
      // another machine's.
      maximum = await measureMaximum(options);
      runs.maximum.push(maximum);
      runOptions = { ...runOptions, rate: Number(maximum.workflowsPerSec) / 2 };
    }
    const ours = await runScenario(scenario, runOptions, compare ? (rows) => (history = rows) : undefined);
    if (maximum) {
      ours[0] = { ...ours[0]!, scenario: 'latency@half-of-maximum', rate: runOptions.rate, maximumWorkflowsPerSec: maximum.workflowsPerSec };
    }
    runs.duraflow.push(...ours);
    // parse() took --compare only where there are baselines.
    if (!compare) continue;
    const main = ours[0]!;
    if (scenario === 'steps') {
      const limit = await measureInsertLimit({
        databaseUrl: options.database!,
        rows: history!,
        batchSize: Number(main.eventsPerFlush),
        // The WAL commits up to two batches at once (over disjoint workflows).
        connections: 2,
      });
      runs.limit.push({ system: 'bare-pg-insert', scenario: 'steps', ...limit });
    } else {
      const floor = await measureLatencyFloor({ databaseUrl: options.database!, steps: options.steps, workflows: options.workflows });
      runs.limit.push({ system: 'bare-pg-and-thread-floor', scenario: 'latency@1-at-a-time', ...floor });
    }
    runs.dbos.push(await runDbos(options, scenario === 'steps' ? 'throughput' : 'latency'));
  }
  const medians: RunResult[] = [];
  if (scenario === 'memory') medians.push(...runs.duraflow);
  else medians.push(medianOf(runs.duraflow));
  if (runs.maximum.length > 0) medians.push(medianOf(runs.maximum));
  if (runs.limit.length > 0) medians.push(medianOf(runs.limit));
  if (runs.dbos.length > 0) medians.push(medianOf(runs.dbos));
  const ratios: Record<string, number> = {};
  const ours = medians[0]!;
  if (runs.limit.length > 0) {
    const limit = medianOf(runs.limit);
    if (scenario === 'steps') ratios.eventsPerSecOverLimit = Number(ours.eventsPerSec) / Number(limit.rowsPerSec);
    else ratios.latencyP50FloorOverDuraflow = Number(limit.workflowP50Ms) / Number(ours.workflowP50Ms);
  }
  if (runs.dbos.length > 0) {
    const dbos = medianOf(runs.dbos);
    if (scenario === 'steps') ratios.throughputOverDbos = Number(ours.activityStepsPerSec) / Number(dbos.activityStepsPerSec);
    else ratios.latencyP50DbosOverDuraflow = Number(dbos.workflowP50Ms) / Number(ours.workflowP50Ms);
  }
  printTable(medians);
  for (const [k, v] of Object.entries(ratios)) console.log(`${k}: ${round(v, 3)}`);
  const profileSummary = profile && summarizeProfile(profile);
  if (profileSummary) {
    await writeFile(profileFile!, JSON.stringify(profile));
    printProfile(profileSummary, profileFile!);
  }
  if (json) {
    const report = {
      scenario,
      options: { ...options, compare, repeat },
      machine: machine(),
      versions: await versions(options.database),
      medians,
      ratios,
      ...(profileSummary ? { profile: { file: profileFile, run: 1, ...profileSummary } } : {}),
      runs,
      at: new Date().toISOString(),
    };
    await writeFile(json, `${JSON.stringify(report, null, 2)}\n`);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
