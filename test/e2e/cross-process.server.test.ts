import { describe, expect, it } from 'vitest';

import type { WorkflowContext } from 'duraflow';

import { expectedMixed, mixed, waitsForGo } from '../fixtures/workflows.js';
import { spawnFixture } from '../helpers/child-engine.js';
import { runCli } from '../helpers/cli.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { serverBackends, useSchema } from '../helpers/database.js';
import { fixtureActivities, openClient, startEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

// Several processes on one database need a server; the embedded database belongs to one process.
async function quick(_ctx: WorkflowContext, n: number): Promise<number> {
  return n;
}

describe.each(serverBackends)('other processes on $name', (backend) => {
  const db = useSchema(backend);

  const env = (): Record<string, string> => ({ DURAFLOW_SCHEMA: db().schema, DATABASE_URL: process.env.DATABASE_URL! });

  it('shows the vars of a running workflow to a client in another process, and to the CLI', async () => {
    const engine = await startEngine(db(), { workflows: { waitsForGo } });
    try {
      const handle = await engine.startWorkflow(waitsForGo, { label: 'from-engine' }, { workflowId: 'x-1' });
      await waitFor(async () => (await engine.inspect('x-1')).vars.stage === 'waiting', 'the wait');
      const child = spawnFixture('client-process.js', env(), ['inspect', 'x-1']);
      expect(JSON.parse(await child.line(/^\{/))).toEqual({ label: 'from-engine', stage: 'waiting' });
      const { code, stdout } = await runCli(['inspect', 'x-1', '--database', process.env.DATABASE_URL!, '--schema', db().schema]);
      expect(code).toBe(0);
      const state = JSON.parse(stdout);
      expect(state).toMatchObject({ workflowId: 'x-1', status: 'running', vars: { stage: 'waiting' } });
      expect(state.waitingOn.events).toEqual([expect.objectContaining({ eventName: 'go' })]);
      await engine.sendEvent('x-1', 'go', 1);
      await handle.result();
    } finally {
      await engine.close();
    }
  });

  it('lets the CLI create nothing: a mistyped schema is an error, and stays absent', async () => {
    const mistyped = `${db().schema}_typo`;
    const failed = await runCli(['inspect', 'x-1', '--database', process.env.DATABASE_URL!, '--schema', mistyped]);
    expect(failed).toMatchObject({ code: 1, stderr: expect.stringContaining(`schema "${mistyped}" holds no duraflow tables`) });
    expect(await db().query(`SELECT 1 FROM information_schema.schemata WHERE schema_name = $1`, [mistyped])).toEqual([]);
  });

  it('picks up starts and events from another process at once and answers its result()', async () => {
    // No poll runs while the test does (its timeout is a minute): only NOTIFY can deliver these.
    // The waits below may then take what a loaded machine needs, and still prove that; each starts
    // once the child process has done its part (children take seconds to start under load).
    const engine = await startEngine(db(), { workflows: { waitsForGo }, pollIntervalMs: 3_600_000 });
    try {
      await spawnFixture('client-process.js', env(), ['start', 'waitsForGo', 'x-2', '{"label":"remote"}']).line(/^started/);
      await waitFor(async () => (await engine.inspect('x-2')).vars.stage === 'waiting', 'the remote start', 30_000);
      const waiter = spawnFixture('client-process.js', env(), ['result', 'x-2']);
      await waiter.line(/^ready/);
      await spawnFixture('client-process.js', env(), ['event', 'x-2', 'go', '{"ok":true}']).line(/^sent/);
      const result = JSON.parse(await waiter.line(/^\{/, 30_000));
      expect(result).toEqual({ label: 'remote', ev: { ok: true } });
    } finally {
      await engine.close();
    }
  });

  it('starts each workflow a client starts once, while fast polls race the pickup on NOTIFY', async () => {
    const logged: string[] = [];
    const record = (obj: object, msg?: string): void => {
      logged.push(`${msg}: ${(obj as { err?: Error }).err?.message}`);
    };
    // A poll that read a row as pending before its start committed must not start it again.
    const engine = await startEngine(db(), {
      workflows: { quick },
      pollIntervalMs: 20,
      logger: { debug() {}, info() {}, warn: record, error: record },
    });
    const client = await openClient(db());
    try {
      const ids = Array.from({ length: 1500 }, (_, i) => `q${i}`);
      for (let i = 0; i < ids.length; i += 20) {
        await Promise.all(ids.slice(i, i + 20).map((id, j) => client.startWorkflow('quick', i + j, { workflowId: id })));
      }
      for (const [i, id] of ids.entries()) expect(await client.result(id, { timeoutMs: 20_000 })).toBe(i);
      const startedTwice = await db().query(
        `SELECT workflow_id FROM "${db().schema}".history WHERE type = 'WorkflowStarted' GROUP BY workflow_id HAVING count(*) > 1`,
      );
      expect(startedTwice).toEqual([]);
      expect(logged).toEqual([]);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it("keeps a client process awaiting result() alive through a dropped connection, and answers it", async () => {
    const client = await openClient(db());
    await client.startWorkflow('nobody', 1, { workflowId: 'w' });
    await client.close();
    const proxy = await FaultProxy.start();
    try {
      const waiter = spawnFixture('client-process.js', { ...env(), DATABASE_URL: proxy.url(process.env.DATABASE_URL!) }, ['result', 'w']);
      // Only the wait is left once it is ready: a read still running would keep the process
      // alive with its retry timer, whatever the wait does.
      await waiter.line(/^ready/);
      // Every connection of the waiting process drops at once; the database stays up.
      proxy.cutAll();
      await db().query(`UPDATE "${db().schema}".workflows SET status = 'completed', result = '7' WHERE id = 'w'`);
      await db().query('SELECT pg_notify($1, $2)', [`duraflow_${db().schema}`, 'done']);
      expect(await waiter.line(/^7$/, 15_000)).toBe('7');
      expect(await waiter.exited).toBe(0);
    } finally {
      await proxy.close();
    }
  });

  it('keeps a workflow no engine registers pending, then starts it when one comes up', async () => {
    const client = await openClient(db());
    try {
      await client.startWorkflow('mixed', { n: 3 }, { workflowId: 'x-3' });
      const pending = await client.inspect('x-3');
      expect(pending.status).toBe('pending');
      expect(pending.pendingReason).toMatch(/waiting for an engine that registers workflow "mixed"/);
      const engine = await startEngine(db(), { workflows: { mixed }, activities: fixtureActivities });
      try {
        expect(await client.result('x-3', { timeoutMs: 20_000 })).toBe(expectedMixed(3));
      } finally {
        await engine.close();
      }
    } finally {
      await client.close();
    }
  });
});
