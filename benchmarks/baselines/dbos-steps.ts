/**
 * Baseline: DBOS Transact (`@dbos-inc/dbos-sdk`) running the `steps` workload.
 *
 * Standalone child-process script, driven by the benchmark harness. A workflow
 * runs S sequential trivial steps (each returns its input + 1, no I/O), so a
 * correct run returns S. stdout carries exactly one JSON line; every log
 * line (ours and DBOS's) goes to stderr.
 *
 *   node dist/benchmarks/baselines/dbos-steps.js \
 *     --database postgres://postgres@127.0.0.1:5432/test \
 *     [--workflows 2000] [--steps 10] [--concurrency W] \
 *     [--mode throughput|latency] [--runs 200] \
 *     [--system-database dbos_bench] [--pool-size N]
 *
 * DBOS keeps its state in a "system database". We give it a dedicated
 * database (default `dbos_bench`) on the server named by --database, and drop
 * and recreate that database at start so every run begins from empty tables.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { DBOS, type DBOSConfig, type DLogger } from '@dbos-inc/dbos-sdk';
import pg from 'pg';

// Keep stdout for the single JSON result line: anything that goes through
// console.log/info/debug (DBOS's built-in console sink uses them) is sent to
// stderr instead. Results are written with process.stdout.write below.
const toStderr = (...args: unknown[]): void => {
  console.error(...args);
};
console.log = toStderr;
console.info = toStderr;
console.debug = toStderr;

const WARMUP_RUNS = 20;

type Mode = 'throughput' | 'latency';

interface Options {
  database: string;
  systemDatabase: string;
  workflows: number;
  steps: number;
  concurrency: number;
  mode: Mode;
  runs: number;
  poolSize: number | undefined;
}

function fail(message: string): never {
  process.stderr.write(`dbos-steps: ${message}\n`);
  process.exit(2);
}

function positiveInt(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) fail(`--${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      database: { type: 'string' },
      'system-database': { type: 'string' },
      workflows: { type: 'string' },
      steps: { type: 'string' },
      concurrency: { type: 'string' },
      mode: { type: 'string' },
      runs: { type: 'string' },
      'pool-size': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  const database = values.database ?? fail('--database <postgres URL> is required');
  const systemDatabase = values['system-database'] ?? 'dbos_bench';
  if (!/^[a-z_][a-z0-9_]*$/.test(systemDatabase)) fail(`--system-database must be a plain lower-case identifier`);
  const mode = values.mode ?? 'throughput';
  if (mode !== 'throughput' && mode !== 'latency') fail(`--mode must be throughput or latency, got ${mode}`);
  const workflows = positiveInt('workflows', values.workflows, 2000);
  return {
    database,
    systemDatabase,
    workflows,
    steps: positiveInt('steps', values.steps, 10),
    concurrency: Math.min(positiveInt('concurrency', values.concurrency, workflows), workflows),
    mode,
    runs: positiveInt('runs', values.runs, 200),
    poolSize: values['pool-size'] === undefined ? undefined : positiveInt('pool-size', values['pool-size'], 10),
  };
}

/** The --database URL with its database name replaced. */
function withDatabase(url: string, dbName: string): string {
  const u = new URL(url);
  u.pathname = `/${dbName}`;
  return u.toString();
}

/** Drop (if present) and create DBOS's dedicated system database. */
async function resetSystemDatabase(adminUrl: string, dbName: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    // dbName is validated as a plain identifier in parseOptions.
    await client.query(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
    await client.query(`CREATE DATABASE "${dbName}"`);
  } finally {
    await client.end();
  }
}

async function dropSystemDatabase(adminUrl: string, dbName: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
  } finally {
    await client.end();
  }
}

/** Version of the installed DBOS package (its package.json is not exported, so find it on disk). */
function dbosVersion(): string {
  const require = createRequire(import.meta.url);
  let dir = dirname(require.resolve('@dbos-inc/dbos-sdk'));
  for (;;) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === '@dbos-inc/dbos-sdk' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // no package.json here; keep walking up
    }
    const parent = dirname(dir);
    if (parent === dir) return 'unknown';
    dir = parent;
  }
}

/** DBOS logger: drop info/debug, send warnings and errors to stderr. */
const stderrLogger: DLogger = {
  info: () => {},
  debug: () => {},
  warn: (entry) => {
    process.stderr.write(`[dbos warn] ${String(entry)}\n`);
  },
  error: (err) => {
    const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
    process.stderr.write(`[dbos error] ${text}\n`);
  },
};

// ---- workload: registered at module load, before DBOS.launch() ----

const increment = DBOS.registerStep(async (x: number): Promise<number> => x + 1, { name: 'increment' });

const stepsWorkflow = DBOS.registerWorkflow(
  async (steps: number): Promise<number> => {
    let value = 0;
    for (let i = 0; i < steps; i++) value = await increment(value);
    return value;
  },
  { name: 'stepsWorkflow' },
);

/** Start one workflow and wait for its result. */
async function runOne(steps: number): Promise<number> {
  const handle = await DBOS.startWorkflow(stepsWorkflow)(steps);
  return handle.getResult();
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

const round = (x: number, digits = 3): number => Number(x.toFixed(digits));

async function throughput(opts: Options, version: string): Promise<number> {
  const results = new Array<number>(opts.workflows);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < opts.workflows) {
      const i = next++;
      results[i] = await runOne(opts.steps);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  const seconds = (performance.now() - t0) / 1000;

  const wrong = results.filter((r) => r !== opts.steps).length;
  if (wrong > 0) {
    process.stderr.write(`dbos-steps: ${wrong}/${opts.workflows} workflows returned a wrong result (expected ${opts.steps})\n`);
    return 1;
  }
  const line = {
    system: 'dbos',
    version,
    mode: 'throughput',
    workflows: opts.workflows,
    steps: opts.steps,
    concurrency: opts.concurrency,
    seconds: round(seconds, 4),
    workflowsPerSec: round(opts.workflows / seconds, 2),
    stepsPerSec: round((opts.workflows * opts.steps) / seconds, 2),
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
  return 0;
}

async function latency(opts: Options, version: string): Promise<number> {
  const check = (r: number): boolean => {
    if (r === opts.steps) return true;
    process.stderr.write(`dbos-steps: workflow returned ${r}, expected ${opts.steps}\n`);
    return false;
  };
  for (let i = 0; i < WARMUP_RUNS; i++) if (!check(await runOne(opts.steps))) return 1;

  const samples: number[] = [];
  for (let i = 0; i < opts.runs; i++) {
    const t0 = performance.now();
    const r = await runOne(opts.steps);
    samples.push(performance.now() - t0);
    if (!check(r)) return 1;
  }
  const sorted = [...samples].sort((a, b) => a - b);
  const line = {
    system: 'dbos',
    version,
    mode: 'latency',
    runs: opts.runs,
    steps: opts.steps,
    p50Ms: round(percentile(sorted, 50)),
    p95Ms: round(percentile(sorted, 95)),
    p99Ms: round(percentile(sorted, 99)),
    meanMs: round(samples.reduce((a, b) => a + b, 0) / samples.length),
  };
  process.stdout.write(`${JSON.stringify(line)}\n`);
  return 0;
}

async function main(): Promise<number> {
  const opts = parseOptions();
  const version = dbosVersion();
  const systemDatabaseUrl = withDatabase(opts.database, opts.systemDatabase);

  await resetSystemDatabase(opts.database, opts.systemDatabase);

  const config: DBOSConfig = {
    name: 'duraflow-bench-steps',
    applicationVersion: 'bench',
    systemDatabaseUrl,
    logger: stderrLogger,
    logLevel: 'error',
    enableOTLP: false,
    tracingEnabled: false,
  };
  if (opts.poolSize !== undefined) config.systemDatabasePoolSize = opts.poolSize;
  DBOS.setConfig(config);
  await DBOS.launch();

  let code: number;
  try {
    code = opts.mode === 'throughput' ? await throughput(opts, version) : await latency(opts, version);
  } finally {
    await DBOS.shutdown();
    await dropSystemDatabase(opts.database, opts.systemDatabase).catch(() => undefined);
  }
  return code;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`dbos-steps: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
