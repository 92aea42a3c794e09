import { describe, expect, it } from 'vitest';

import { PgDriver } from '../../storage/pg-driver.js';
import { serverBackends, useSchema } from '../helpers/database.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { waitFor } from '../helpers/wait-for.js';

describe.each(serverBackends)('the pg driver on $name', (backend) => {
  const schema = useSchema(backend);

  it('replaces a LISTEN connection that stops answering, and tells the listeners', async () => {
    const db = schema();
    const proxy = await FaultProxy.start();
    const driver = new PgDriver({
      connectionString: proxy.url(db.database as string),
      maxConnections: 2,
      onError() {},
      listenCheckMs: 200,
    });
    const channel = `check_${db.schema}`;
    const heard: string[] = [];
    try {
      await driver.listen(channel, (payload) => heard.push(payload));
      // The LISTEN connection's check goes unanswered, as after a silent drop; nothing else does.
      proxy.holdResponsesTo('SELECT 1');
      await waitFor(async () => heard.includes('reconnected'), 'the listeners to hear of the reconnect');
      await db.query('SELECT pg_notify($1, $2)', [channel, 'after']);
      await waitFor(async () => heard.includes('after'), 'a notification on the new connection');
      expect(heard.indexOf('after')).toBeGreaterThan(heard.indexOf('reconnected'));
    } finally {
      proxy.resume();
      await driver.close();
      await proxy.close();
    }
  });

  it('closes cleanly while its LISTEN connection is being re-established', async () => {
    const db = schema();
    const proxy = await FaultProxy.start();
    const driver = new PgDriver({ connectionString: proxy.url(db.database as string), maxConnections: 2, onError() {} });
    const channel = `close_${db.schema}`;
    const heard: string[] = [];
    try {
      await driver.listen(channel, (payload) => heard.push(payload));
      const accepted = proxy.stats.accepted;
      // The connection drops; the reconnect reaches a proxy that forwards nothing yet.
      proxy.blackhole();
      proxy.cutAll();
      await waitFor(async () => proxy.stats.accepted > accepted, 'a reconnect under way');
      const closing = driver.close();
      proxy.resume();
      await closing;
      const listening = async (): Promise<number> =>
        (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = $1`, [`LISTEN "${channel}"`]))[0]!.n;
      await waitFor(async () => (await listening()) === 0, 'no connection left listening');
      expect(heard).not.toContain('reconnected');
    } finally {
      proxy.resume();
      await proxy.close();
    }
  });
});
