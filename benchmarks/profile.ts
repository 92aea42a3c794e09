/**
 * `--profile FILE`: a CPU profile of the engine's main thread during a measured run, written as
 * a `.cpuprofile` (Chrome DevTools' Performance panel and speedscope draw it as a flame graph),
 * and summed up in the report: the collector's and the idle share, and where the rest went.
 */
import { Session } from 'node:inspector/promises';
import { fileURLToPath } from 'node:url';

/** The V8 CPU profile format (`Profiler.Profile` of the DevTools protocol), as much as is read here. */
export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** Where a profile's time went, in % of the sampled time. */
export interface ProfileSummary {
  sampledMs: number;
  garbageCollectorPct: number;
  /** The thread waited (for a commit, the activity threads, the next arrival). */
  idlePct: number;
  /** V8 and Node's own work outside any JavaScript function (compiling, the event loop's bookkeeping). */
  programPct: number;
  /** Self time by function, the largest first. */
  functions: { function: string; pct: number }[];
  /** Self time by source file (the engine's files, each dependency's, Node's), the largest first. */
  files: { file: string; pct: number }[];
}

/** Finer than V8's default of 1 ms: a step costs tens of microseconds. */
const SAMPLING_INTERVAL_US = 250;
const LISTED = 15;

/** This package's directory, whether this file runs built (`dist/benchmarks/`) or as source. */
const PACKAGE_ROOT = fileURLToPath(new URL('.', import.meta.url)).replace(/(dist\/)?benchmarks\/$/, '');

/** Starts profiling this thread; `stop()` returns the profile. One profile at a time. */
export async function startCpuProfile(): Promise<{ stop(): Promise<CpuProfile> }> {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: SAMPLING_INTERVAL_US });
  await session.post('Profiler.start');
  return {
    async stop() {
      const { profile } = await session.post('Profiler.stop');
      session.disconnect();
      return profile as CpuProfile;
    },
  };
}

/** A script's place, short: relative to this package, or from its package in node_modules. */
function shortFile(url: string): string {
  if (url === '') return '(native)';
  // The embedded database's compiled Postgres.
  if (url.startsWith('wasm://')) return 'wasm (PGlite)';
  if (!url.startsWith('file://')) return url;
  const path = fileURLToPath(url);
  const inModules = path.lastIndexOf('/node_modules/');
  if (inModules >= 0) return path.slice(inModules + '/node_modules/'.length);
  return path.startsWith(PACKAGE_ROOT) ? path.slice(PACKAGE_ROOT.length) : path;
}

/** Sums a profile's self time by function and by file. */
export function summarizeProfile(profile: CpuProfile): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  // A sample's delta is the time since the one before it: the time up to the next sample is this
  // sample's (the last one's is unknown and left out).
  let total = 0;
  for (let i = 0; i + 1 < samples.length; i++) {
    const us = Math.max(0, deltas[i + 1] ?? 0);
    selfUs.set(samples[i]!, (selfUs.get(samples[i]!) ?? 0) + us);
    total += us;
  }
  const special = { '(garbage collector)': 0, '(idle)': 0, '(program)': 0 };
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    if (functionName in special) {
      special[functionName as keyof typeof special] += us;
      continue;
    }
    const file = shortFile(url);
    const name = `${functionName || '(anonymous)'} ${file}${url ? `:${lineNumber + 1}` : ''}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + us);
    byFile.set(file, (byFile.get(file) ?? 0) + us);
  }
  const pct = (us: number): number => (total === 0 ? 0 : Math.round((us / total) * 1000) / 10);
  const largest = (m: Map<string, number>): [string, number][] => [...m].sort((a, b) => b[1] - a[1]).slice(0, LISTED);
  return {
    sampledMs: Math.round(total / 1000),
    garbageCollectorPct: pct(special['(garbage collector)']),
    idlePct: pct(special['(idle)']),
    programPct: pct(special['(program)']),
    functions: largest(byFunction).map(([name, us]) => ({ function: name, pct: pct(us) })),
    files: largest(byFile).map(([file, us]) => ({ file, pct: pct(us) })),
  };
}
