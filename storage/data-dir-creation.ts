import { closeSync, existsSync, fsyncSync, openSync, readdirSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';

/**
 * Present while a first start makes the database in its data directory: from before PGlite
 * writes its first file until the migrations are applied. A directory holding it has no database
 * yet, whatever else is in it.
 */
export const CREATING_FILE = 'duraflow.creating';

/**
 * What a first start finds in a new directory and leaves alone: the lock, its drafts and its
 * take-over (see data-dir-lock.ts), and the lost+found of a file system mounted there.
 */
const KEPT = /^(duraflow\.lock(\..+)?|lost\+found)$/;

/**
 * Whether `dir` holds a database a start finished making (or one an older version made, which
 * never marked it).
 */
export function hasDatabase(dir: string): boolean {
  return existsSync(path.join(dir, 'PG_VERSION')) && !existsSync(path.join(dir, CREATING_FILE));
}

/**
 * Makes the first start in `dir` all or nothing; the caller holds the directory's lock. PGlite
 * writes the cluster file by file, and one killed midway (with PG_VERSION written, say, but not
 * postgresql.conf) leaves a directory it can never open again. So a directory holding nothing yet
 * (but the lock) is marked first, and the mark goes only once the database is whole; a start that
 * finds the mark (its maker is gone, as the lock is now this process's) clears what was left and
 * makes the database again. Returns the function that removes the mark, or undefined where this
 * start makes nothing: a database is there, or files this start did not mark, which are opened
 * as they are (a directory an older version left half made is refused by PGlite, as before).
 *
 * The mark is a file in the directory rather than a sibling directory renamed into place: a
 * rename needs write access to the parent and fails onto a mount point (EBUSY), and a data
 * directory that is a container's volume is both.
 */
export function beginCreation(dir: string): (() => void) | undefined {
  const mark = path.join(dir, CREATING_FILE);
  const entries = readdirSync(dir);
  if (entries.includes(CREATING_FILE)) {
    for (const entry of entries) {
      if (entry !== CREATING_FILE && !KEPT.test(entry)) rmSync(path.join(dir, entry), { recursive: true, force: true });
    }
  } else if (entries.every((entry) => KEPT.test(entry))) {
    const fd = openSync(mark, 'w');
    try {
      writeSync(
        fd,
        'A first start is making the embedded database in this directory. If no process has it open,\n' +
          'that start did not finish: the next start deletes what it left and makes the database again.\n',
      );
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    // The mark's entry in the directory too: after a power cut, PGlite's first files could
    // otherwise be there without it, a half-made database that no start would make again.
    syncDirectory(dir);
  } else {
    return undefined;
  }
  return () => {
    unlinkSync(mark);
    // Else a power cut could bring the mark back, and the next start would delete the database,
    // with whatever was stored in it since.
    syncDirectory(dir);
  };
}

/** Makes the entries of `dir` (files added or removed) survive a power cut. */
function syncDirectory(dir: string): void {
  // Windows opens no directory for fsync (and NTFS journals its entries).
  if (process.platform === 'win32') return;
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
