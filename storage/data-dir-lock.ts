import { mkdirSync, readFileSync, realpathSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/** Thrown when the embedded database's directory is open in a process already. */
export class DataDirectoryInUseError extends Error {
  constructor(dataDir: string, pid: number) {
    super(
      `the embedded database in ${JSON.stringify(dataDir)} is open in process ${pid}${pid === process.pid ? ' (this one)' : ''}; ` +
        'it belongs to one process at a time: close it there first, or share a Postgres server',
    );
    this.name = 'DataDirectoryInUseError';
  }
}

const LOCK_FILE = 'duraflow.lock';
/** A take-over left behind by a process that died in the middle of one. */
const STALE_TAKEOVER_MS = 10_000;
/** Lock files this process holds: a lock naming this pid but not in here was left by an earlier process. */
const held = new Set<string>();

interface Holder {
  pid: number;
  /** The kernel's boot id: a pid from before a reboot names nobody. */
  boot: string;
}

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return '';
  }
}

/**
 * The directory a PGlite `dataDir` names on disk, or undefined for stores that are not a
 * directory (`memory://`, `idb://`, `opfs-ahp://`).
 */
export function directoryOf(dataDir: string): string | undefined {
  if (dataDir.startsWith('file://')) return dataDir.slice('file://'.length);
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(dataDir) ? undefined : dataDir;
}

/**
 * Claims `dir` for this process with a lock file inside it, holding the pid and the boot. A second
 * opener would not see the first one's writes and, on close, would write over them. A lock left
 * by a process that died (or before a reboot, or by an earlier process with this pid) is taken
 * over. Returns the release.
 */
export function lockDataDir(dir: string, shownAs: string): () => void {
  mkdirSync(dir, { recursive: true });
  const lockFile = path.join(realpathSync(dir), LOCK_FILE);
  if (held.has(lockFile)) throw new DataDirectoryInUseError(shownAs, process.pid);
  const me: Holder = { pid: process.pid, boot: bootId() };
  if (!tryCreate(lockFile, me)) {
    const holder = readHolder(lockFile);
    if (holder && isLive(holder, me)) throw new DataDirectoryInUseError(shownAs, holder.pid);
    if (!takeOver(lockFile, me)) throw new DataDirectoryInUseError(shownAs, readHolder(lockFile)?.pid ?? 0);
  }
  held.add(lockFile);
  return () => {
    held.delete(lockFile);
    if (readHolder(lockFile)?.pid === me.pid) removeIfPresent(lockFile);
  };
}

function tryCreate(file: string, me: Holder): boolean {
  try {
    writeFileSync(file, JSON.stringify(me), { flag: 'wx' });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
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
    if (holder && isLive(holder, me)) return false;
    removeIfPresent(lockFile);
    return tryCreate(lockFile, me);
  } finally {
    removeIfPresent(takeover);
  }
}

function readHolder(file: string): Holder | undefined {
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as Partial<Holder>;
    return typeof parsed.pid === 'number' ? { pid: parsed.pid, boot: String(parsed.boot ?? '') } : undefined;
  } catch {
    return undefined;
  }
}

function isLive(holder: Holder, me: Holder): boolean {
  // This process holds what it holds in `held`; its pid on a lock it does not hold is a past one's.
  if (holder.pid === me.pid) return false;
  if (holder.boot !== '' && me.boot !== '' && holder.boot !== me.boot) return false;
  try {
    process.kill(holder.pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function removeIfPresent(file: string): void {
  try {
    unlinkSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}
