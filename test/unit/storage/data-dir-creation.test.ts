import fs, { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { beginCreation, CREATING_FILE, hasDatabase } from '../../../storage/data-dir-creation.js';

describe('the first start in a data directory', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'duraflow-creation-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('marks a directory that holds only the lock and a lost+found, and counts it as a database once the mark goes', () => {
    writeFileSync(path.join(dir, 'duraflow.lock'), '{}');
    mkdirSync(path.join(dir, 'lost+found'));
    const finish = beginCreation(dir)!;
    expect(existsSync(path.join(dir, CREATING_FILE))).toBe(true);
    writeFileSync(path.join(dir, 'PG_VERSION'), '17\n');
    expect(hasDatabase(dir)).toBe(false);
    finish();
    expect(hasDatabase(dir)).toBe(true);
    expect(readdirSync(dir).sort()).toEqual(['PG_VERSION', 'duraflow.lock', 'lost+found']);
  });

  it('clears what an unfinished first start left, keeping the lock files and the mark', () => {
    for (const file of [CREATING_FILE, 'duraflow.lock', 'duraflow.lock.takeover', 'PG_VERSION', 'postmaster.pid']) {
      writeFileSync(path.join(dir, file), '');
    }
    mkdirSync(path.join(dir, 'base', '1'), { recursive: true });
    writeFileSync(path.join(dir, 'base', '1', '1259'), '');
    const finish = beginCreation(dir);
    expect(finish).toBeTypeOf('function');
    expect(readdirSync(dir).sort()).toEqual([CREATING_FILE, 'duraflow.lock', 'duraflow.lock.takeover']);
  });

  it('syncs the mark and the directory before PGlite writes, and the directory once the mark is removed', () => {
    // What a power cut keeps is only observable by cutting the power: the calls are what can be
    // checked, in their order, with what each was given.
    const synced: string[] = [];
    const pathOf = new Map<number, string>();
    const realOpen = fs.openSync;
    const realFsync = fs.fsyncSync;
    const realUnlink = fs.unlinkSync;
    vi.spyOn(fs, 'openSync').mockImplementation((file, ...rest) => {
      const fd = realOpen(file, ...rest);
      pathOf.set(fd, path.basename(String(file)));
      return fd;
    });
    vi.spyOn(fs, 'fsyncSync').mockImplementation((fd) => {
      synced.push(`fsync ${pathOf.get(fd as number)}`);
      realFsync(fd);
    });
    vi.spyOn(fs, 'unlinkSync').mockImplementation((file) => {
      synced.push(`unlink ${path.basename(String(file))}`);
      realUnlink(file);
    });
    syncBuiltinESMExports();
    try {
      const finish = beginCreation(dir)!;
      expect(synced).toEqual([`fsync ${CREATING_FILE}`, `fsync ${path.basename(dir)}`]);
      finish();
      expect(synced.slice(2)).toEqual([`unlink ${CREATING_FILE}`, `fsync ${path.basename(dir)}`]);
    } finally {
      vi.restoreAllMocks();
      syncBuiltinESMExports();
    }
  });

  it('leaves alone a directory holding files it did not mark: a database, or an older version left half made', () => {
    writeFileSync(path.join(dir, 'duraflow.lock'), '{}');
    writeFileSync(path.join(dir, 'PG_VERSION'), '17\n');
    expect(beginCreation(dir)).toBeUndefined();
    expect(hasDatabase(dir)).toBe(true);
    expect(readdirSync(dir).sort()).toEqual(['PG_VERSION', 'duraflow.lock']);
  });
});
