/**
 * A server that drops out of reach silently (a network path lost, no reset) leaves a statement
 * with no read timeout, a migration's, waiting until TCP keepalive gives the connection up. The
 * driver's connections, pooled and listening, are probed after seconds of silence rather than the
 * system's two hours. Read off the kernel's table of this process's sockets, so Linux only.
 */
import { readdir, readFile, readlink } from 'node:fs/promises';

import { describe, expect, it } from 'vitest';

import { PgDriver } from '../../storage/pg-driver.js';
import { serverBackends, useSchema } from '../helpers/database.js';

/** /proc/net/tcp counts timers in USER_HZ ticks, 100 a second on Linux. */
const TICKS_PER_SECOND = 100;
const KEEPALIVE_TIMER = 2;

interface SocketTimer {
  inode: string;
  remotePort: number;
  timer: number;
  secondsLeft: number;
}

/** The TCP sockets this process holds, with the timer each runs. */
async function ownSocketTimers(): Promise<SocketTimer[]> {
  const inodes = new Set<string>();
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (inode) inodes.add(inode);
  }
  const timers: SocketTimer[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of (await readFile(table, 'utf8')).split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 10 || !inodes.has(fields[9]!)) continue;
      const [timer, ticks] = fields[5]!.split(':');
      timers.push({
        inode: fields[9]!,
        remotePort: parseInt(fields[2]!.split(':')[1]!, 16),
        timer: parseInt(timer!, 16),
        secondsLeft: parseInt(ticks!, 16) / TICKS_PER_SECOND,
      });
    }
  }
  return timers;
}

describe.runIf(process.platform === 'linux').each(serverBackends)('connections on $name', (backend) => {
  const db = useSchema(backend);

  it('are probed by TCP keepalive after seconds of silence, pooled and listening alike', async () => {
    const url = db().database as string;
    const serverPort = Number(new URL(url).port || 5432);
    const before = new Set((await ownSocketTimers()).map((s) => s.inode));
    const sql = new PgDriver({ connectionString: url, maxConnections: 2, onError() {} });
    try {
      await Promise.all([sql.exec('SELECT pg_sleep(0.05)'), sql.exec('SELECT pg_sleep(0.05)')]);
      const stopListening = await sql.listen('keepalive_check', () => {});
      const opened = (await ownSocketTimers()).filter((s) => !before.has(s.inode) && s.remotePort === serverPort);
      // Two pooled connections and the listener's, each with its keepalive timer running.
      expect(opened).toHaveLength(3);
      for (const socket of opened) {
        expect(socket.timer, JSON.stringify(socket)).toBe(KEEPALIVE_TIMER);
        expect(socket.secondsLeft, JSON.stringify(socket)).toBeLessThanOrEqual(10);
      }
      await stopListening();
    } finally {
      await sql.close();
    }
  });
});
