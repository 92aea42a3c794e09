import { readFileSync, readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

/**
 * Which process on which machine holds a lease, precisely enough for another process on the same
 * machine to tell that it has ended: the boot (Linux's boot id), the namespaces (the pid one: two
 * containers on one host may both run pid 1; and the time one, which shifts the start times
 * `/proc` shows), the pid, and the process's start time (a pid reused by another process starts
 * at another time). Written `boot ns pid start`; undefined where `/proc` does not tell (not
 * Linux), or tells of another pid namespace than this process's (a pid namespace entered without
 * mounting its own `/proc`, where `/proc/<pid>` is another process than `pid`): leases held there
 * end only by expiring.
 */
export function processIdentity(): string | undefined {
  try {
    const boot = bootId();
    // One pid only: `/proc` is this process's pid namespace's, where `/proc/<pid>` is `pid`.
    const nsPid = /^NSpid:\s*(\d+)\s*$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
    if (nsPid !== String(process.pid)) return undefined;
    const namespace = `${readlinkSync('/proc/self/ns/pid')}${timeNamespace()}`;
    const started = startTicks(readFileSync('/proc/self/stat', 'utf8'));
    if (boot === '' || started === undefined) return undefined;
    return `${boot} ${namespace} ${process.pid} ${started}`;
  } catch {
    return undefined;
  }
}

/** `/time:[inode]`, or nothing before Linux 5.6 (no time namespaces). */
function timeNamespace(): string {
  try {
    return `/${readlinkSync('/proc/self/ns/time')}`;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw error;
  }
}

/**
 * Whether the process `holderIdentity` names has certainly ended: it ran on this boot of this machine, in
 * these namespaces, and its pid is free, taken by a process started at another time, or a zombie.
 * False whenever that cannot be told (another machine or container, an unreadable `/proc`, a
 * process `/proc` hides, as `hidepid=invisible` does another user's): only expiry ends such a
 * lease. Any words after the start time are ignored.
 */
export async function hasProcessEnded(holderIdentity: string, ownIdentity: string): Promise<boolean> {
  const [boot, namespace, pidText, started] = holderIdentity.split(' ');
  const [ownBoot, ownNamespace] = ownIdentity.split(' ');
  if (boot !== ownBoot || namespace !== ownNamespace || started === undefined) return false;
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ENOENT' && !isPidInUse(pid);
  }
  return isOtherOrEnded(stat, started);
}

/**
 * Whether `/proc/<pid>/stat` shows a process other than the one that started at `started`, or a
 * zombie; false if its start time cannot be read.
 */
function isOtherOrEnded(stat: string, started: string): boolean {
  const ticks = startTicks(stat);
  if (ticks === undefined) return false;
  const state = stateOf(stat);
  return state === 'Z' || state === 'X' || ticks !== started;
}

/**
 * Whether a process has `pid`, as the kernel says (`/proc` may hide one it runs; one of another
 * user's is there all the same).
 */
export function isPidInUse(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** The fields of `/proc/<pid>/stat` after the command name, which may hold spaces and parentheses. */
function fieldsAfterName(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

function stateOf(stat: string): string | undefined {
  return fieldsAfterName(stat)[0];
}

/** Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot. */
function startTicks(stat: string): string | undefined {
  return fieldsAfterName(stat)[19];
}

/**
 * Whether the process `pid` that started at `start` (clock ticks since boot) still runs: false once
 * it has ended, a zombie not yet reaped included, or its pid went to a process started at another
 * time. True where `/proc` hides it and the pid is in use (`hidepid`), since that cannot be told.
 */
export function isStillRunning(pid: number, start: string): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return isPidInUse(pid);
  }
  return !isOtherOrEnded(stat, start);
}

/** The kernel's boot id, or '' where the system does not tell (a pid from before a reboot names nobody). */
export function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
}

/** When process `pid` started, in clock ticks since boot; '' if it is gone or the system does not tell. */
export function processStartTicks(pid: number): string {
  try {
    return startTicks(readFileSync(`/proc/${pid}/stat`, 'utf8')) ?? '';
  } catch {
    return '';
  }
}
