/**
 * Stored values of a workflow besides its history (input, result, error, variables, an activity's
 * last failure, a queued event's payload) changed by hand into text duraflow did not write:
 * `inspect` and `result()` name the workflow and the value with UnreadableStateError, and leave
 * every row as it was.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { type Client, ErrorCode, type StoredField, UnreadableStateError, type WorkflowContext } from 'duraflow';

import { backends, type TestSchema } from '../helpers/database.js';
import { openClient, startEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

/** Sets a variable, then waits a minute for the retry of an activity whose first attempt failed. */
async function retrying(ctx: WorkflowContext, input: { n: number }): Promise<void> {
  ctx.setVar('n', input.n);
  await ctx.activities<{ flaky(): Promise<void> }>({ retry: { initialIntervalMs: 60_000, maxAttempts: 2 } }).flaky();
}

async function completes(): Promise<{ ok: boolean }> {
  return { ok: true };
}

async function fails(): Promise<never> {
  throw new Error('it failed');
}

/** One stored value: where it is, what `UnreadableStateError` calls it, and texts that break it. */
interface Corruption {
  table: 'workflows' | 'activity_tasks' | 'inbox';
  column: string;
  workflowId: string;
  field: StoredField;
  /** Text that is not JSON. */
  notJson: string;
  /** For a value stored as an object: JSON that is not one. */
  notAnObject?: string;
}

const corruptions: Corruption[] = [
  { table: 'workflows', column: 'input', workflowId: 'retrying', field: 'input', notJson: '{"n":' },
  { table: 'workflows', column: 'vars', workflowId: 'retrying', field: 'vars', notJson: '{"n":1', notAnObject: '[1]' },
  {
    table: 'activity_tasks',
    column: 'last_failure',
    workflowId: 'retrying',
    field: 'waitingOn.activities.lastFailure',
    notJson: '{"name":"Error"',
    notAnObject: '"not yet"',
  },
  { table: 'inbox', column: 'payload', workflowId: 'retrying', field: 'queuedEvents.payload', notJson: '"payload' },
  { table: 'workflows', column: 'result', workflowId: 'completes', field: 'result', notJson: '{"ok":tru' },
  { table: 'workflows', column: 'error', workflowId: 'fails', field: 'error', notJson: '{"name":"Error",', notAnObject: 'null' },
];

/** Each corruption with each text that breaks it, and the kind of error that must be its cause. */
function* brokenValues(cases: Corruption[]): Generator<[Corruption, string, typeof SyntaxError | typeof TypeError]> {
  for (const c of cases) {
    yield [c, c.notJson, SyntaxError];
    if (c.notAnObject !== undefined) yield [c, c.notAnObject, TypeError];
  }
}

const idColumn = (table: Corruption['table']): string => (table === 'workflows' ? 'id' : 'workflow_id');

describe.each(backends)('unreadable stored values on $name', (backend) => {
  let db: TestSchema;
  let client: Client;
  beforeEach(async () => {
    db = await backend.schema();
    // The workflows end (or wait for the retry) in an engine closed before anything is changed,
    // so nothing but the test writes their rows.
    const engine = await startEngine(db, {
      workflows: { retrying, completes, fails },
      inlineActivities: { flaky: () => Promise.reject(new Error('not yet')) },
    });
    try {
      await engine.startWorkflow(retrying, { n: 1 }, { workflowId: 'retrying' });
      await engine.startWorkflow(completes, undefined, { workflowId: 'completes' });
      await engine.startWorkflow(fails, undefined, { workflowId: 'fails' });
      await waitFor(async () => (await engine.inspect('retrying')).waitingOn.activities[0]?.lastFailure, 'the failed first attempt');
      await waitFor(async () => (await engine.inspect('fails')).status === 'failed', 'the failure');
      await waitFor(async () => (await engine.inspect('completes')).status === 'completed', 'the result');
    } finally {
      await engine.close();
    }
    client = await openClient(db);
    // With no engine to take it, the event stays queued.
    await client.sendEvent('retrying', 'later', 'payload');
  });
  afterEach(async () => {
    await client.close();
    await db.drop();
  });

  /** Every row of every workflow. */
  async function stored(): Promise<unknown[]> {
    const rows: unknown[] = [];
    for (const table of ['workflows', 'history', 'activity_tasks', 'inbox', 'timers']) {
      rows.push(await db.query(`SELECT * FROM "${db.schema}".${table} ORDER BY 1, 2`));
    }
    return rows;
  }

  /** Sets the value to `text` and returns what it held. */
  async function setValue(c: Corruption, text: string): Promise<string> {
    const where = `${idColumn(c.table)} = $1`;
    const [row] = await db.query<{ value: string }>(`SELECT ${c.column} AS value FROM "${db.schema}".${c.table} WHERE ${where}`, [c.workflowId]);
    await db.query(`UPDATE "${db.schema}".${c.table} SET ${c.column} = $2 WHERE ${where}`, [c.workflowId, text]);
    return row!.value;
  }

  function expectUnreadable(error: unknown, c: Corruption, broken: string, cause: typeof SyntaxError | typeof TypeError): void {
    expect(error, `${c.field} as ${broken}`).toBeInstanceOf(UnreadableStateError);
    expect(error).toMatchObject({ code: ErrorCode.UnreadableState, workflowId: c.workflowId, field: c.field });
    expect((error as Error).cause).toBeInstanceOf(cause);
  }

  it('inspect names the workflow and each stored value besides the history that it cannot read, changes nothing stored, and reads the value again once repaired', async () => {
    for (const [c, broken, cause] of brokenValues(corruptions)) {
      const original = await setValue(c, broken);
      const before = await stored();
      const error = await client.inspect(c.workflowId).then(
        () => 'inspected',
        (e: unknown) => e,
      );
      expectUnreadable(error, c, broken, cause);
      expect(await stored()).toEqual(before);
      await setValue(c, original);
      await client.inspect(c.workflowId);
    }
  });

  it('result() names the workflow and the stored result or error it cannot read, changes nothing stored, and answers once repaired', async () => {
    for (const [c, broken, cause] of brokenValues(corruptions.filter((c) => c.field === 'result' || c.field === 'error'))) {
      const original = await setValue(c, broken);
      const before = await stored();
      const error = await client.result(c.workflowId).then(
        () => 'answered',
        (e: unknown) => e,
      );
      expectUnreadable(error, c, broken, cause);
      expect(await stored()).toEqual(before);
      await setValue(c, original);
    }
    expect(await client.result('completes')).toEqual({ ok: true });
    await expect(client.result('fails')).rejects.toMatchObject({ code: ErrorCode.WorkflowFailed, cause: { message: 'it failed' } });
  });
});
