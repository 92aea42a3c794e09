import { randomUUID } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, realpathSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { bootId, isPidInUse, isStillRunning, processStartTicks } from './process-identity.js';

/** Thrown when the embedded database's directory is open in a process already. */
export class DataDirectoryInUseError extends Error {
  constructor(dataDir: string, pid: number, lockFile: string) {
    super(
      `the embedded database in ${JSON.stringify(dataDir)} is open in process ${pid}${pid === process.pid ? ' (this one)' : ''}; ` +
        'it belongs to one process at a time: close it there first, or share a Postgres server ' +
        `(if no such process is running, delete ${lockFile})`,
    );
    this.name = 'DataDirectoryInUseError';
  }
}

const LOCK_FILE = 'duraflow.lock';
/** A take-over left behind by a process that died in the middle of one. */
const STALE_TAKEOVER_MS = 10_000;
/** Lock files this module holds, for systems without process start times. */
const held = new Set<string>();

/** Who holds a lock: enough to tell a live holder from a dead one that left its lock behind. */
interface Holder {
  pid: number;
  /** The kernel's boot id ('' where unknown): a pid from before a reboot names nobody. */
  boot: string;
  /** The process's start time in clock ticks since boot ('' where unknown): tells a reused pid. */
  start: string;
  /** Written by this holder only: a release never deletes someone else's lock. */
  token: string;
}

/**
 * The directory a PGlite `dataDir` names on disk, or undefined for one in memory ('' and
 * `memory://`). Read as PGlite reads it: its prefixes are case-sensitive, and anything else is a
 * path (the engine's options refuse other `scheme://` forms before this).
 */
export function directoryOf(dataDir: string): string | undefined {
  if (dataDir === '' || dataDir.startsWith('memory://')) return undefined;
  return dataDir.startsWith('file://') ? dataDir.slice('file://'.length) : dataDir;
}

/**
 * Claims `dir` for this process with a lock file inside it. A second opener would not see the
 * first one's writes and, on close, would write over them. A lock left by a process that died,
 * by an earlier process with the same pid (a container's pid 1 restarting) or from before a
 * reboot is taken over. Returns the release, which acts once.
 */
export function lockDataDir(dir: string, shownAs: string): () => void {
  mkdirSync(dir, { recursive: true });
  const lockFile = path.join(realpathSync(dir), LOCK_FILE);
  const me: Holder = {
    pid: process.pid,
    boot: bootId(),
    start: processStartTicks(process.pid),
    token: randomUUID(),
  };
  if (!tryCreate(lockFile, me)) {
    const holder = readHolder(lockFile);
    if (holder && isLive(holder, me, lockFile)) throw new DataDirectoryInUseError(shownAs, holder.pid, lockFile);
    if (!takeOver(lockFile, me)) throw new DataDirectoryInUseError(shownAs, readHolder(lockFile)?.pid ?? 0, lockFile);
  }
  held.add(lockFile);
  let isReleased = false;
  return () => {
    if (isReleased) return;
    isReleased = true;
    held.delete(lockFile);
    if (readHolder(lockFile)?.token === me.token) removeIfPresent(lockFile);
  };
}

/** Creates the lock with its content in one step (a link of a written file), or finds it taken. */
function tryCreate(file: string, me: Holder): boolean {
  const draft = `${file}.${me.token}.tmp`;
  writeFileSync(draft, JSON.stringify(me));
  try {
    linkSync(draft, file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    removeIfPresent(draft);
  }
}

/**
 * Replaces a dead holder's lock. Two processes may find it dead at once: only the one that creates
 * the take-over file replaces it, after checking again that it is still the dead one's.
 */
function takeOver(lockFile: string, me: Holder): boolean {
  const takeover = `${lockFile}.takeover`;
  try {
    if (Date.now() - statSync(takeover).mtimeMs > STALE_TAKEOVER_MS) removeIfPresent(takeover);
  } catch {
    // No take-over under way.
  }
  if (!tryCreate(takeover, me)) return false;
  try {
    const holder = readHolder(lockFile);
    if (holder && isLive(holder, me, lockFile)) return false;
    removeIfPresent(lockFile);
    return tryCreate(lockFile, me);
  } finally {
    if (readHolder(takeover)?.token === me.token) removeIfPresent(takeover);
  }
}

/** The holder a lock file names; undefined if it is gone or unreadable (so held by nobody). */
function readHolder(file: string): Holder | undefined {
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<Holder>;
    if (typeof parsed.pid !== 'number') return undefined;
    return { pid: parsed.pid, boot: String(parsed.boot ?? ''), start: String(parsed.start ?? ''), token: String(parsed.token ?? '') };
  } catch {
    return undefined;
  }
}

function isLive(holder: Holder, me: Holder, lockFile: string): boolean {
  if (holder.boot !== '' && me.boot !== '' && holder.boot !== me.boot) return false;
  if (holder.start !== '' && me.start !== '') {
    // The same pid and start time is a live process: this one (another thread, say) or the holder.
    return isStillRunning(holder.pid, holder.start);
  }
  // Without start times: this pid on a lock is this process's only if it holds it.
  if (holder.pid === me.pid) return held.has(lockFile);
  return isPidInUse(holder.pid);
}

function removeIfPresent(file: string): void {
  try {
    unlinkSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
