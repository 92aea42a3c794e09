import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { hasProcessEnded, processIdentity } from '../../../storage/process-identity.js';
import { waitFor } from '../../helpers/wait-for.js';

const identityModule = new URL('../../../dist/storage/process-identity.js', import.meta.url).href;

/**
 * A real node process that prints its identity and lives until its stdin closes; `wrapper` is a
 * command that runs it (as `unshare ... node`).
 */
async function otherProcess(wrapper: string[] = []): Promise<{ identity: string; pid: number; end(): Promise<void> }> {
  const argv = [
    ...wrapper,
    process.execPath,
    '--input-type=module',
    '-e',
    `const { processIdentity } = await import(${JSON.stringify(identityModule)}); console.log(processIdentity()); process.stdin.resume();`,
  ];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  const [chunk] = (await once(child.stdout, 'data')) as [Buffer];
  const identity = chunk.toString().trim();
  return {
    identity,
    pid: Number(identity.split(' ')[2]),
    async end() {
      const exited = once(child, 'exit');
      child.stdin.end();
      await exited;
    },
  };
}

// The machines this runs on are Linux, where /proc tells: elsewhere processIdentity() is undefined.
describe('telling whether a lease holder on this machine has ended', () => {
  const self = processIdentity()!;

  it('names this process by boot, pid namespace, pid and start time', () => {
    const [boot, namespace, pid, started] = self.split(' ');
    expect(boot).toMatch(/^[0-9a-f-]{36}$/);
    expect(namespace).toMatch(/^pid:\[\d+\](\/time:\[\d+\])?$/);
    expect(pid).toBe(String(process.pid));
    expect(started).toMatch(/^\d+$/);
  });

  it('sees a process alive while it runs and ended once it exits', async () => {
    const other = await otherProcess();
    expect(other.identity.split(' ').slice(0, 2)).toEqual(self.split(' ').slice(0, 2));
    expect(await hasProcessEnded(other.identity, self)).toBe(false);
    expect(await hasProcessEnded(self, self)).toBe(false);
    await other.end();
    expect(await hasProcessEnded(other.identity, self)).toBe(true);
  });

  it('sees a pid now held by a process started at another time as ended', async () => {
    const [boot, namespace, pid, started] = self.split(' ');
    expect(await hasProcessEnded(`${boot} ${namespace} ${pid} ${Number(started) - 1}`, self)).toBe(true);
  });

  it('cannot tell, so never says ended, for another boot or pid namespace, or an identity it cannot read', async () => {
    const [boot, namespace, pid, started] = self.split(' ');
    const gone = await otherProcess();
    await gone.end();
    const [, , gonePid, goneStarted] = gone.identity.split(' ');
    expect(await hasProcessEnded(`another-boot ${namespace} ${gonePid} ${goneStarted}`, self)).toBe(false);
    expect(await hasProcessEnded(`${boot} pid:[1] ${gonePid} ${goneStarted}`, self)).toBe(false);
    expect(await hasProcessEnded(`${boot} ${namespace} ${pid}`, self)).toBe(false);
    expect(await hasProcessEnded(`${boot} ${namespace} not-a-pid ${started}`, self)).toBe(false);
  });

  it('sees a stopped process alive, and a zombie ended', async () => {
    const stopped = await otherProcess();
    try {
      process.kill(stopped.pid, 'SIGSTOP');
      await waitFor(() => stateOf(stopped.pid) === 'T', 'the process to stop', 5_000);
      expect(await hasProcessEnded(stopped.identity, self)).toBe(false);
    } finally {
      process.kill(stopped.pid, 'SIGCONT');
      await stopped.end();
    }
    // A node process that exits under a parent that never reaps it (sh exec'd into sleep).
    const script = `const { processIdentity } = await import(${JSON.stringify(identityModule)}); console.log(processIdentity());`;
    const parent = spawn('sh', ['-c', '"$0" --input-type=module -e "$1" & exec sleep 60', process.execPath, script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const [chunk] = (await once(parent.stdout, 'data')) as [Buffer];
      const zombie = chunk.toString().trim();
      await waitFor(() => stateOf(Number(zombie.split(' ')[2])) === 'Z', 'the process to become a zombie', 10_000);
      expect(await hasProcessEnded(zombie, self)).toBe(true);
    } finally {
      parent.kill('SIGKILL');
    }
  });

  // These need Linux namespaces (unshare), and the first, root: CI's machines have both (they run
  // there); a developer's machine without them leaves them out.
  const canUnshare = spawnSync('unshare', ['-Urpf', 'true']).status === 0;
  const isRoot = process.getuid?.() === 0 && spawnSync('unshare', ['-m', 'true']).status === 0 && spawnSync('setpriv', ['--help']).status === 0;

  it.runIf(isRoot)('does not take a live process that /proc hides (hidepid, as systemd ProtectProc=invisible) for an ended one', async () => {
    const holder = await otherProcess();
    try {
      // Another user's view, through a /proc that shows each user only its own processes.
      const check = `const { hasProcessEnded, processIdentity } = await import(${JSON.stringify(identityModule)}); console.log(await hasProcessEnded(${JSON.stringify(holder.identity)}, processIdentity()));`;
      const run = spawnSync(
        'unshare',
        ['-m', 'sh', '-c', 'mount -t proc -o hidepid=2 proc /proc && exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"', 'sh'].concat([
          process.execPath,
          '--input-type=module',
          '-e',
          check,
        ]),
        { encoding: 'utf8' },
      );
      expect(run.stderr).toBe('');
      expect(run.stdout.trim()).toBe('false');
    } finally {
      await holder.end();
    }
  });

  it.runIf(canUnshare)('cannot tell, in a pid namespace whose /proc is another namespace\'s, so never takes itself for ended', () => {
    const check = `const { hasProcessEnded, processIdentity } = await import(${JSON.stringify(identityModule)}); const self = processIdentity(); console.log(self === undefined ? 'cannot tell' : await hasProcessEnded(self, self));`;
    // A new pid namespace (this process is pid 1 there) with the /proc of the one outside.
    const run = spawnSync('unshare', ['-Urpf', process.execPath, '--input-type=module', '-e', check], { encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(run.stdout.trim()).toBe('cannot tell');
  });

  it.runIf(canUnshare)('does not take a live process in another time namespace (its start time shifted) for an ended one', async () => {
    const holder = await otherProcess(['unshare', '-UrT', '--boottime', '1000', '-f']);
    try {
      expect(holder.identity).not.toBe('undefined');
      expect(await hasProcessEnded(holder.identity, self)).toBe(false);
    } finally {
      await holder.end();
    }
  });
});

function stateOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}
