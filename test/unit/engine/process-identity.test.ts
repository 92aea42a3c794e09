import { spawn } from 'node:child_process';
import { once } from 'node:events';

import { describe, expect, it } from 'vitest';

import { hasEnded, thisProcess } from '../../../engine/process-identity.js';

const identityModule = new URL('../../../dist/engine/process-identity.js', import.meta.url).href;

/** A real node process that prints its identity and lives until its stdin closes. */
async function otherProcess(): Promise<{ identity: string; end(): Promise<void> }> {
  const child = spawn(
    process.execPath,
    ['--input-type=module', '-e', `const { thisProcess } = await import(${JSON.stringify(identityModule)}); console.log(thisProcess()); process.stdin.resume();`],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const [chunk] = (await once(child.stdout, 'data')) as [Buffer];
  return {
    identity: chunk.toString().trim(),
    async end() {
      const exited = once(child, 'exit');
      child.stdin.end();
      await exited;
    },
  };
}

// The machines this runs on are Linux, where /proc tells: elsewhere thisProcess() is undefined.
describe('telling whether a lease holder on this machine has ended', () => {
  const self = thisProcess()!;

  it('names this process by boot, pid namespace, pid and start time', () => {
    const [boot, namespace, pid, started] = self.split(' ');
    expect(boot).toMatch(/^[0-9a-f-]{36}$/);
    expect(namespace).toMatch(/^pid:\[\d+\]$/);
    expect(pid).toBe(String(process.pid));
    expect(started).toMatch(/^\d+$/);
  });

  it('sees a process alive while it runs and ended once it exits', async () => {
    const other = await otherProcess();
    expect(other.identity.split(' ').slice(0, 2)).toEqual(self.split(' ').slice(0, 2));
    expect(await hasEnded(other.identity, self)).toBe(false);
    expect(await hasEnded(self, self)).toBe(false);
    await other.end();
    expect(await hasEnded(other.identity, self)).toBe(true);
  });

  it('sees a pid now held by a process started at another time as ended', async () => {
    const [boot, namespace, pid, started] = self.split(' ');
    expect(await hasEnded(`${boot} ${namespace} ${pid} ${Number(started) - 1}`, self)).toBe(true);
  });

  it('cannot tell, so never says ended, for another boot or pid namespace, or what it cannot read', async () => {
    const [boot, namespace, pid, started] = self.split(' ');
    const gone = await otherProcess();
    await gone.end();
    const [, , gonePid, goneStarted] = gone.identity.split(' ');
    expect(await hasEnded(`another-boot ${namespace} ${gonePid} ${goneStarted}`, self)).toBe(false);
    expect(await hasEnded(`${boot} pid:[1] ${gonePid} ${goneStarted}`, self)).toBe(false);
    expect(await hasEnded(`${boot} ${namespace} ${pid}`, self)).toBe(false);
    expect(await hasEnded(`${boot} ${namespace} not-a-pid ${started}`, self)).toBe(false);
  });
});
