import { readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import os from 'node:os';

/** The machine, for the JSON report. */
export function machine(): { cores: number; cpuModel: string; memoryGiB: number; platform: string; node: string } {
  const cpus = os.cpus();
  return {
    cores: os.availableParallelism(),
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
  };
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux

/** User and system CPU ticks in a /proc `stat` line: its fields 14 and 15, counted after the ") " that ends its command. */
function cpuTicksIn(stat: string): number {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/**
 * CPU seconds used so far by every local process whose command is `postgres` (server, backends,
 * background workers), from /proc. Undefined where /proc is not readable (not Linux, or a remote
 * server: its CPU cannot be measured from here).
 */
export async function postgresCpuSeconds(): Promise<number | undefined> {
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return undefined;
  }
  let ticks = 0;
  let found = false;
  await Promise.all(
    entries
      .filter((e) => /^\d+$/.test(e))
      .map(async (pid) => {
        try {
          const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
          const close = stat.lastIndexOf(')');
          const comm = stat.slice(stat.indexOf('(') + 1, close);
          if (comm !== 'postgres') return;
          ticks += cpuTicksIn(stat);
          found = true;
        } catch {
          // The process ended while we read.
        }
      }),
  );
  return found ? ticks / TICKS_PER_SECOND : undefined;
}

/** CPU seconds of each thread of this process by thread id, from /proc; undefined where it is not readable. */
function threadCpuSeconds(): Map<string, number> | undefined {
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return undefined;
  }
  const seconds = new Map<string, number>();
  for (const tid of tids) {
    try {
      seconds.set(tid, cpuTicksIn(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')) / TICKS_PER_SECOND);
    } catch {
      // The thread ended while we read.
    }
  }
  return seconds;
}

/**
 * The threads this process had when the harness loaded: the main thread and V8's platform threads,
 * which do the garbage collector's parallel and concurrent work and compile optimised code for
 * every isolate (the activity threads' too). Threads started later are the activity threads
 * (and libuv's pool, which reading /proc here wakes).
 */
const threadsAtLoad = new Set(threadCpuSeconds()?.keys());

/** CPU over a span: the whole process (all threads), its main thread's busy share, Postgres. */
export interface CpuUse {
  engineCpuPct: number;
  /** Event-loop utilisation of the main thread, in %: the engine's own thread. */
  mainThreadBusyPct: number;
  databaseCpuPct: number | undefined;
  /**
   * CPU seconds by kind of thread, from /proc (Linux only). Unlike the busy share, which counts
   * the time the thread was ready but waited for a core, these are time on a core.
   */
  threadCpuSeconds: { main: number; v8Background: number; activityAndOther: number } | undefined;
}

/** Measures this process's and Postgres's CPU over a span; call `stop()` at its end. */
export async function cpuMeter(): Promise<{ stop(): Promise<CpuUse> }> {
  // The scan of Postgres's processes first: its own CPU and time are not the engine's.
  const pgStart = await postgresCpuSeconds();
  const threadsStart = threadCpuSeconds();
  const start = performance.now();
  const usage = process.cpuUsage();
  const loop = performance.eventLoopUtilization();
  return {
    async stop() {
      const wall = (performance.now() - start) / 1000;
      const used = process.cpuUsage(usage);
      const busy = performance.eventLoopUtilization(loop).utilization;
      const threadsEnd = threadCpuSeconds();
      const pgEnd = await postgresCpuSeconds();
      return {
        engineCpuPct: ((used.user + used.system) / 1e6 / wall) * 100,
        mainThreadBusyPct: busy * 100,
        databaseCpuPct: pgStart === undefined || pgEnd === undefined ? undefined : ((pgEnd - pgStart) / wall) * 100,
        threadCpuSeconds: threadsStart && threadsEnd && byKind(threadsStart, threadsEnd),
      };
    },
  };
}

/** CPU seconds each kind of thread used between two readings (a thread gone by the end is missed). */
function byKind(start: Map<string, number>, end: Map<string, number>): NonNullable<CpuUse['threadCpuSeconds']> {
  const used = { main: 0, v8Background: 0, activityAndOther: 0 };
  for (const [tid, seconds] of end) {
    const spent = seconds - (start.get(tid) ?? 0);
    if (tid === String(process.pid)) used.main += spent;
    else if (threadsAtLoad.has(tid)) used.v8Background += spent;
    else used.activityAndOther += spent;
  }
  return used;
}
