/**
 * A workflow's stored input changed by hand into text that is not JSON: the engine that starts or
 * replays the workflow fails its actor with UnreadableStateError and rebuilds it after a growing
 * pause, neither failing nor parking the workflow, and runs it once the input is repaired.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { ErrorCode, UnreadableStateError, type WorkflowContext } from 'duraflow';

import { backends, type TestSchema } from '../helpers/database.js';
import { loggerKeeping, openClient, startEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

async function doubles(_ctx: WorkflowContext, input: { n: number }): Promise<number> {
  return input.n * 2;
}

async function doublesOnGo(ctx: WorkflowContext, input: { n: number }): Promise<number> {
  await ctx.waitForEvent('go');
  return input.n * 2;
}

const BROKEN_INPUT = '{"n":';

function expectUnreadableInput(error: unknown, workflowId: string): void {
  expect(error).toBeInstanceOf(UnreadableStateError);
  expect(error).toMatchObject({ code: ErrorCode.UnreadableState, workflowId, field: 'input' });
  expect((error as Error).cause).toBeInstanceOf(SyntaxError);
}

describe.each(backends)('an unreadable input on $name', (backend) => {
  let db: TestSchema;
  beforeEach(async () => {
    db = await backend.schema();
  });
  afterEach(async () => {
    await db.drop();
  });

  const setInput = (workflowId: string, input: string): Promise<unknown> =>
    db.query(`UPDATE "${db.schema}".workflows SET input = $2 WHERE id = $1`, [workflowId, input]);

  it('refuses an input that cannot be encoded at the start, storing nothing: only a stored input changed since can be unreadable', async () => {
    const client = await openClient(db);
    try {
      await expect(client.startWorkflow('doubles', { n: 1n }, { workflowId: 'unencodable' })).rejects.toMatchObject({
        code: ErrorCode.InvalidArgument,
      });
      expect(await db.query(`SELECT id FROM "${db.schema}".workflows`)).toEqual([]);
    } finally {
      await client.close();
    }
  });

  it('does not fail a due workflow whose stored input it cannot decode: rebuilds it after a growing pause, storing nothing, and starts it once the input is repaired', async () => {
    const client = await openClient(db);
    try {
      // Stored by a client with no engine running: the input is broken before any engine sees it.
      await client.startWorkflow('doubles', { n: 21 }, { workflowId: 'broken-start' });
    } finally {
      await client.close();
    }
    const [stored] = await db.query<{ input: string }>(`SELECT input FROM "${db.schema}".workflows WHERE id = 'broken-start'`);
    await setInput('broken-start', BROKEN_INPUT);
    const failures = loggerKeeping('actor failed; rebuilding it');
    const engine = await startEngine(db, { workflows: { doubles }, logger: failures.logger });
    try {
      await waitFor(() => failures.at.length >= 4, 'four failed starts', 10_000);
      // The first rebuild is at once; then each waits twice as long as the one before (100 ms,
      // 200 ms, …), less up to half at random.
      const gaps = failures.at.slice(1, 4).map((at, i) => at - failures.at[i]!);
      expect(gaps[1]).toBeGreaterThanOrEqual(45);
      expect(gaps[2]).toBeGreaterThanOrEqual(95);
      for (const error of failures.errors) expectUnreadableInput(error, 'broken-start');
      expect(await db.query(`SELECT status, error, input FROM "${db.schema}".workflows WHERE id = 'broken-start'`)).toEqual([
        { status: 'pending', error: null, input: BROKEN_INPUT },
      ]);
      expect(await db.query(`SELECT seq FROM "${db.schema}".history WHERE workflow_id = 'broken-start'`)).toEqual([]);
      await setInput('broken-start', stored!.input);
      expect(await engine.result('broken-start', { timeoutMs: 10_000 })).toBe(42);
    } finally {
      await engine.close();
    }
  });

  it('does not park a running workflow whose stored input it cannot decode on replay: its load fails until the input is repaired, then it runs on', async () => {
    const first = await startEngine(db, { workflows: { doublesOnGo } });
    try {
      await first.startWorkflow(doublesOnGo, { n: 4 }, { workflowId: 'broken-replay' });
      await waitFor(async () => (await first.inspect('broken-replay')).waitingOn.events.length > 0, 'the wait');
    } finally {
      await first.close();
    }
    const [stored] = await db.query<{ input: string }>(`SELECT input FROM "${db.schema}".workflows WHERE id = 'broken-replay'`);
    await setInput('broken-replay', BROKEN_INPUT);
    const loads = loggerKeeping('loading workflow failed');
    const engine = await startEngine(db, { workflows: { doublesOnGo }, logger: loads.logger });
    try {
      await engine.sendEvent('broken-replay', 'go');
      await waitFor(() => loads.errors.length > 0, 'a failed load');
      expectUnreadableInput(loads.errors[0], 'broken-replay');
      const inspected = await engine.inspect('broken-replay').then(
        () => 'inspected',
        (e: unknown) => e,
      );
      expectUnreadableInput(inspected, 'broken-replay');
      expect(await db.query(`SELECT status, error, input FROM "${db.schema}".workflows WHERE id = 'broken-replay'`)).toEqual([
        { status: 'running', error: null, input: BROKEN_INPUT },
      ]);
      await setInput('broken-replay', stored!.input);
      expect(await engine.result('broken-replay', { timeoutMs: 10_000 })).toBe(8);
    } finally {
      await engine.close();
    }
  });
});
