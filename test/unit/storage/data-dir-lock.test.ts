import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { DataDirectoryInUseError, directoryOf, lockDataDir } from '../../../storage/data-dir-lock.js';
import { bootId } from '../../../storage/process-identity.js';
import { waitFor } from '../../helpers/wait-for.js';

describe('the data directory lock', () => {
  let dir: string;
  let lockFile: string;
  beforeEach(() => {
    dir = path.join(mkdtempSync(path.join(tmpdir(), 'duraflow-lock-')), 'db');
    lockFile = path.join(dir, 'duraflow.lock');
  });
  afterEach(() => {
    rmSync(path.dirname(dir), { recursive: true, force: true });
  });

  it('refuses a second holder in this process, and a late second release leaves the next holder alone', () => {
    const release = lockDataDir(dir, 'db');
    expect(() => lockDataDir(`${dir}/`, 'db')).toThrow(DataDirectoryInUseError);
    release();
    const next = lockDataDir(dir, 'db');
    release();
    expect(existsSync(lockFile)).toBe(true);
    expect(() => lockDataDir(dir, 'db')).toThrow(DataDirectoryInUseError);
    next();
    expect(existsSync(lockFile)).toBe(false);
  });

  it('refuses while another live process holds it, naming the process and the file', () => {
    lockDataDir(dir, 'db')();
    writeFileSync(lockFile, JSON.stringify({ pid: process.ppid }));
    expect(() => lockDataDir(dir, 'db')).toThrow(`open in process ${process.ppid}`);
    expect(() => lockDataDir(dir, 'db')).toThrow(lockFile);
  });

  it('takes over a lock left by an earlier holder of this pid, another boot, or nothing readable', () => {
    lockDataDir(dir, 'db')();
    for (const left of [{ pid: process.pid, start: '1' }, { pid: process.ppid, boot: 'an-earlier-boot' }, 'not a lock']) {
      writeFileSync(lockFile, typeof left === 'string' ? left : JSON.stringify(left));
      lockDataDir(dir, 'db')();
      expect(existsSync(lockFile)).toBe(false);
    }
  });

  it.runIf(existsSync('/proc/self/stat'))('takes over a lock whose holder died and was not reaped yet (a zombie)', async () => {
    // The shell starts a process that ends a second later, then becomes a sleep that never reaps
    // it. Ended at once, the child could be reaped by the shell before the exec.
    const parent = spawn('sh', ['-c', 'sleep 1 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      let printed = '';
      parent.stdout.on('data', (chunk: Buffer) => (printed += chunk.toString()));
      const pid = await waitFor(() => /^(\d+)\n/.exec(printed)?.[1], 'the pid of the child');
      const fieldsOf = (): string[] => {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      };
      await waitFor(() => fieldsOf()[0] === 'Z', 'the child to be a zombie');
      lockDataDir(dir, 'db')();
      writeFileSync(lockFile, JSON.stringify({ pid: Number(pid), boot: bootId(), start: fieldsOf()[19], token: 'the dead one' }));
      lockDataDir(dir, 'db')();
      expect(existsSync(lockFile)).toBe(false);
    } finally {
      parent.kill();
    }
  });

  it('locks only what is a directory on disk', () => {
    expect(directoryOf('./data')).toBe('./data');
    expect(directoryOf('file:///var/data')).toBe('/var/data');
    // PGlite's prefixes are case-sensitive: anything else is a path to it, and so to the lock.
    expect(directoryOf('Memory://db')).toBe('Memory://db');
    for (const inMemory of ['', 'memory://', 'memory://db']) expect(directoryOf(inMemory)).toBeUndefined();
  });
});
