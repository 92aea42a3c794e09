import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { type ActivityFailure, ErrorCode, MetricName, UnreadableHistoryError, type WorkflowContext } from 'duraflow';

import { backends, type TestSchema } from '../helpers/database.js';
import { fixtureActivities, loggerKeeping, openClient, readMetric, startEngine, waitUntilParked } from '../helpers/engines.js';
import { untilClosed } from '../helpers/held-activity.js';
import { waitFor } from '../helpers/wait-for.js';

type Fixtures = typeof import('../fixtures/activities.js');

/** Activities, timers, an event and two races, every one with a result fixed by the input. */
async function everything(ctx: WorkflowContext, input: { n: number }): Promise<unknown> {
  const { double, hang } = ctx.activities<Fixtures>();
  const doubled = await double(input.n);
  ctx.setVar('doubled', doubled);
  await ctx.sleep(5);
  const event = await ctx.waitForEvent<{ k: number }>('go');
  // A fast activity against a long timer, then an activity that never ends (until the engine
  // closes) against a short timer.
  const first = await Promise.race([double(event.k), ctx.sleep(60_000).then(() => 'timer')]);
  const second = await Promise.race([hang(undefined), ctx.sleep(1).then(() => 'timer')]);
  ctx.setVar('done', true);
  return { doubled, first, second, random: Math.floor(ctx.random() * 1000) };
}

async function waitsForGo(ctx: WorkflowContext): Promise<string> {
  return ctx.waitForEvent<string>('go');
}

async function quick(): Promise<string> {
  return 'quick';
}

async function awaitsWork(ctx: WorkflowContext): Promise<string> {
  return ctx.activities<{ work(): Promise<string> }>().work();
}

async function worksThenWaits(ctx: WorkflowContext): Promise<string> {
  const worked = await ctx.activities<{ work(): Promise<string> }>().work();
  return `${worked} ${await ctx.waitForEvent<string>('go')}`;
}

/**
 * Records a row of every type whose payload replay reads: an activity that failed for good, an
 * event a wait took, and a wait for "go" it is left at.
 */
async function readsEveryPayload(ctx: WorkflowContext): Promise<string> {
  const { refuse } = ctx.activities<{ refuse(): Promise<void> }>({ retry: { maxAttempts: 1 } });
  const failed = await refuse().then(
    () => 'not refused',
    (error: ActivityFailure) => `${error.activityName} failed after ${error.attempts}`,
  );
  const first = await ctx.waitForEvent<string>('first');
  return `${failed}, ${first} ${await ctx.waitForEvent<string>('go')}`;
}

const refused = {
  refuse(): never {
    throw new Error('refused');
  },
};

/** A field replay reads, removed from its row or stored in another form, as by hand. */
interface MisshapenField {
  eventType: string;
  change: string;
  edit(payload: Record<string, unknown>): void;
}

const misshapenFields: MisshapenField[] = [
  { eventType: 'EventWaitStarted', change: 'without eventName', edit: (p) => delete p.eventName },
  { eventType: 'EventWaitStarted', change: 'with eventName a number', edit: (p) => (p.eventName = 7) },
  { eventType: 'EventWaitStarted', change: 'with timeoutAt a string', edit: (p) => (p.timeoutAt = 'in an hour') },
  { eventType: 'EventReceived', change: 'without inboxId', edit: (p) => delete p.inboxId },
  { eventType: 'EventReceived', change: 'with resolves a string', edit: (p) => (p.resolves = String(p.resolves)) },
  { eventType: 'ActivityFailed', change: 'without failure', edit: (p) => delete p.failure },
  { eventType: 'ActivityFailed', change: 'with attempts a string', edit: (p) => (p.attempts = String(p.attempts)) },
];

/** A history row of `eventType` broken outside its payload, as by hand: `set` and `repair` are SQL assignments. */
interface BrokenRow {
  eventType: string;
  change: string;
  set: string;
  repair: string;
}

const brokenRows: BrokenRow[] = [
  { eventType: 'ActivityFailed', change: 'given a type duraflow does not write', set: "type = 'ActivityEnded'", repair: "type = 'ActivityFailed'" },
  { eventType: 'ActivityFailed', change: 'without its command id', set: 'command_id = NULL', repair: 'command_id = 1' },
  { eventType: 'EventWaitStarted', change: 'without its command id', set: 'command_id = NULL', repair: 'command_id = 2' },
];

/**
 * Leaves `workflowId` awaiting an activity that no engine runs, then breaks the activity's
 * ActivityScheduled row. Returns the query that reads that row and the payload it had.
 */
async function leaveUnreadableActivity(db: TestSchema, workflowId: string): Promise<{ scheduled: string; stored: string }> {
  const first = await startEngine(db, { workflows: { awaitsWork }, inlineActivities: { work: untilClosed } });
  try {
    await first.startWorkflow(awaitsWork, undefined, { workflowId });
  } finally {
    await first.close();
  }
  const scheduled = `SELECT payload FROM "${db.schema}".history WHERE workflow_id = '${workflowId}' AND seq = 2`;
  const [row] = await db.query<{ payload: string }>(scheduled);
  await db.query(`UPDATE "${db.schema}".history SET payload = '{' WHERE workflow_id = $1 AND seq = 2`, [workflowId]);
  return { scheduled, stored: row!.payload };
}

/** Which row of a readsEveryPayload workflow a test breaks, and how the load must report it. */
interface RowToBreak {
  workflowId: string;
  /** The first row of this type is broken. */
  eventType: string;
  change: string;
  /** What the UnreadableHistoryError says beyond its code, workflow and seq. */
  says?: object;
}

/**
 * Leaves `workflowId` (readsEveryPayload) waiting for go, breaks its first `eventType` row with
 * `breakRow`, and checks that an engine takes the row for an unreadable one, not for changed code:
 * its load and inspect() fail with UnreadableHistoryError naming the row, the workflow is not
 * parked, the row is left as broken, and the workflow runs on once the repair `breakRow` returned
 * has run.
 */
async function expectTakenForUnreadable(
  db: TestSchema,
  { workflowId, eventType, change, says = {} }: RowToBreak,
  breakRow: (row: { seq: number; payload: string }) => Promise<() => Promise<unknown>>,
): Promise<void> {
  const engineOptions = { workflows: { readsEveryPayload }, inlineActivities: refused };
  const first = await startEngine(db, engineOptions);
  try {
    await first.startWorkflow(readsEveryPayload, undefined, { workflowId });
    await first.sendEvent(workflowId, 'first', 'one');
    await waitFor(async () => (await first.inspect(workflowId)).waitingOn.events[0]?.eventName === 'go', 'the wait for go');
  } finally {
    await first.close();
  }
  const [row] = await db.query<{ seq: number; payload: string }>(
    `SELECT seq, payload FROM "${db.schema}".history WHERE workflow_id = $1 AND type = $2 ORDER BY seq LIMIT 1`,
    [workflowId, eventType],
  );
  const { seq } = row!;
  const repairRow = await breakRow(row!);
  const readRow = `SELECT type, command_id, payload FROM "${db.schema}".history WHERE workflow_id = $1 AND seq = $2`;
  const broken = await db.query(readRow, [workflowId, seq]);
  const { logger, errors: loadErrors } = loggerKeeping('loading workflow failed');
  const engine = await startEngine(db, { ...engineOptions, logger });
  try {
    await engine.sendEvent(workflowId, 'go', 'then');
    await waitFor(() => loadErrors.length > 0, `a failed load (${eventType} ${change})`);
    const unreadable = { code: ErrorCode.UnreadableHistory, workflowId, seq, ...says };
    expect(loadErrors[0]).toBeInstanceOf(UnreadableHistoryError);
    expect(loadErrors[0]).toMatchObject(unreadable);
    const inspected = await engine.inspect(workflowId).then(
      () => 'inspected',
      (e: unknown) => e,
    );
    expect(inspected).toBeInstanceOf(UnreadableHistoryError);
    expect(inspected).toMatchObject(unreadable);
    expect(await db.query(`SELECT status, error FROM "${db.schema}".workflows WHERE id = $1`, [workflowId])).toEqual([
      { status: 'running', error: null },
    ]);
    expect(await db.query(readRow, [workflowId, seq])).toEqual(broken);
    await repairRow();
    expect(await engine.result(workflowId, { timeoutMs: 10_000 })).toBe('refuse failed after 1, one then');
  } finally {
    await engine.close();
  }
}

async function runAll(db: TestSchema, maxCachedWorkflows: number): Promise<unknown[]> {
  const engine = await startEngine(db, { workflows: { everything }, activities: fixtureActivities, maxCachedWorkflows });
  try {
    const handles = await Promise.all(
      Array.from({ length: 50 }, (_, n) => engine.startWorkflow(everything, { n }, { workflowId: `r-${n}` })),
    );
    // Some events arrive before the wait and are kept, some after: both paths replay.
    await Promise.all(handles.map((h) => engine.sendEvent(h.workflowId, 'go', { k: 7 })));
    return await Promise.all(handles.map((h) => h.result()));
  } finally {
    await engine.close();
  }
}

describe.each(backends)('replay on $name', (backend) => {
  let db: TestSchema;
  let uncachedDb: TestSchema;
  beforeEach(async () => {
    db = await backend.schema();
    uncachedDb = await backend.schema();
  });
  afterEach(async () => {
    await db.drop();
    await uncachedDb.drop();
  });

  it('rebuilds a workflow whose history it cannot read after a growing pause, not in a loop, its loads failing with UnreadableHistoryError while it stays running; the others go on', async () => {
    const first = await startEngine(db, { workflows: { waitsForGo } });
    await first.startWorkflow(waitsForGo, undefined, { workflowId: 'unreadable' });
    await waitFor(async () => (await first.inspect('unreadable')).waitingOn.events.length > 0, 'the wait');
    await first.close();
    await db.query(`UPDATE "${db.schema}".history SET payload = '{' WHERE workflow_id = 'unreadable' AND type = 'WorkflowStarted'`);
    const { logger, errors: loadErrors, at: failedLoads } = loggerKeeping('loading workflow failed');
    // Polls that find the event (every 50 ms) must not load it again during a pause.
    const engine = await startEngine(db, { workflows: { waitsForGo, quick }, logger, pollIntervalMs: 50 });
    try {
      await engine.sendEvent('unreadable', 'go', 'now');
      await waitFor(() => failedLoads.length >= 4, 'four failed loads', 10_000);
      // The first rebuild is at once; then each waits twice as long as the one before (100 ms,
      // 200 ms, …), less up to half at random.
      const gaps = failedLoads.slice(1, 4).map((at, i) => at - failedLoads[i]!);
      expect(gaps[1]).toBeGreaterThanOrEqual(45);
      expect(gaps[2]).toBeGreaterThanOrEqual(95);
      expect(await (await engine.startWorkflow(quick, undefined)).result()).toBe('quick');
      // Every failure names the row, not JSON.parse's SyntaxError; and the row is left as it was.
      for (const error of loadErrors) {
        expect(error).toBeInstanceOf(UnreadableHistoryError);
        expect(error).toMatchObject({ code: ErrorCode.UnreadableHistory, workflowId: 'unreadable', seq: 1, eventType: 'WorkflowStarted' });
      }
      expect(await db.query(`SELECT status FROM "${db.schema}".workflows WHERE id = 'unreadable'`)).toEqual([{ status: 'running' }]);
      expect(await db.query(`SELECT payload FROM "${db.schema}".history WHERE workflow_id = 'unreadable' AND seq = 1`)).toEqual([{ payload: '{' }]);
    } finally {
      await engine.close();
    }
  });

  it('starts and runs the other workflows when an unfinished activity cannot be read, naming its row, and runs it once the row is repaired', async () => {
    const { scheduled, stored } = await leaveUnreadableActivity(db, 'unreadable-task');
    const { logger, errors } = loggerKeeping('an unfinished activity cannot be read; it is not run');
    // The recovery at the start reads every unfinished activity: this one must not stop it.
    const second = await startEngine(db, { workflows: { awaitsWork, quick }, inlineActivities: { work: () => 'worked' }, logger });
    try {
      expect(await (await second.startWorkflow(quick, undefined)).result()).toBe('quick');
      // Logged again at each rebuild that looks for the repair.
      expect(errors.length).toBeGreaterThan(0);
      for (const error of errors) {
        expect(error).toBeInstanceOf(UnreadableHistoryError);
        expect(error).toMatchObject({ workflowId: 'unreadable-task', seq: 2, eventType: 'ActivityScheduled' });
      }
      expect(await db.query(scheduled)).toEqual([{ payload: '{' }]);
    } finally {
      await second.close();
    }
    await db.query(`UPDATE "${db.schema}".history SET payload = $1 WHERE workflow_id = 'unreadable-task' AND seq = 2`, [stored]);
    const repaired = await startEngine(db, { workflows: { awaitsWork }, inlineActivities: { work: () => 'worked' } });
    try {
      expect(await repaired.result('unreadable-task', { timeoutMs: 10_000 })).toBe('worked');
    } finally {
      await repaired.close();
    }
  });

  it('does not run an unfinished activity whose row has no command id, naming its row, and runs it once the row is repaired', async () => {
    const { stored } = await leaveUnreadableActivity(db, 'idless-task');
    // Its payload back as it was: only the command id is missing.
    await db.query(`UPDATE "${db.schema}".history SET payload = $1, command_id = NULL WHERE workflow_id = 'idless-task' AND seq = 2`, [stored]);
    const { logger, errors } = loggerKeeping('an unfinished activity cannot be read; it is not run');
    const runs: unknown[] = [];
    const work = (): string => {
      runs.push('ran');
      return 'worked';
    };
    const engine = await startEngine(db, { workflows: { awaitsWork, quick }, inlineActivities: { work }, logger });
    try {
      await waitFor(() => errors.length > 0, 'the recovery to leave the activity out');
      expect(errors[0]).toBeInstanceOf(UnreadableHistoryError);
      expect(errors[0]).toMatchObject({ workflowId: 'idless-task', seq: 2, eventType: 'ActivityScheduled' });
      expect(await (await engine.startWorkflow(quick, undefined)).result()).toBe('quick');
      expect(runs).toEqual([]);
      await db.query(`UPDATE "${db.schema}".history SET command_id = 1 WHERE workflow_id = 'idless-task' AND seq = 2`);
      expect(await engine.result('idless-task', { timeoutMs: 10_000 })).toBe('worked');
      expect(runs).toEqual(['ran']);
    } finally {
      await engine.close();
    }
  });

  it('runs an unfinished activity whose row could not be read once the row is repaired, without a restart', async () => {
    const { stored } = await leaveUnreadableActivity(db, 'repaired-live');
    const { logger, errors: skipped } = loggerKeeping('an unfinished activity cannot be read; it is not run');
    const engine = await startEngine(db, { workflows: { awaitsWork }, inlineActivities: { work: () => 'worked' }, logger });
    try {
      await waitFor(() => skipped.length > 0, 'the recovery to leave the activity out');
      await db.query(`UPDATE "${db.schema}".history SET payload = $1 WHERE workflow_id = 'repaired-live' AND seq = 2`, [stored]);
      expect(await engine.result('repaired-live', { timeoutMs: 10_000 })).toBe('worked');
    } finally {
      await engine.close();
    }
  });

  it('takes an ActivityScheduled row that names no activity for an unreadable row, as the recovery does, not for changed code: the workflow is not parked, and runs on once the row is repaired', async () => {
    const first = await startEngine(db, { workflows: { worksThenWaits }, inlineActivities: { work: () => 'worked' } });
    try {
      await first.startWorkflow(worksThenWaits, undefined, { workflowId: 'nameless' });
      await waitFor(async () => (await first.inspect('nameless')).waitingOn.events.length > 0, 'the wait');
    } finally {
      await first.close();
    }
    // The finished activity's row: replay reads it, the recovery of unfinished ones does not.
    const scheduled = `SELECT payload FROM "${db.schema}".history WHERE workflow_id = 'nameless' AND seq = 2`;
    const [row] = await db.query<{ payload: string }>(scheduled);
    await db.query(`UPDATE "${db.schema}".history SET payload = '{}' WHERE workflow_id = 'nameless' AND seq = 2`);
    const { logger, errors: loadErrors } = loggerKeeping('loading workflow failed');
    const engine = await startEngine(db, { workflows: { worksThenWaits }, inlineActivities: { work: () => 'worked' }, logger });
    try {
      await engine.sendEvent('nameless', 'go', 'then');
      await waitFor(() => loadErrors.length > 0, 'a failed load');
      expect(loadErrors[0]).toBeInstanceOf(UnreadableHistoryError);
      expect(loadErrors[0]).toMatchObject({ workflowId: 'nameless', seq: 2, eventType: 'ActivityScheduled' });
      const inspected = await engine.inspect('nameless').then(
        () => 'inspected',
        (e: unknown) => e,
      );
      expect(inspected).toMatchObject({ code: ErrorCode.UnreadableHistory, workflowId: 'nameless', seq: 2 });
      expect(await db.query(`SELECT status, error FROM "${db.schema}".workflows WHERE id = 'nameless'`)).toEqual([
        { status: 'running', error: null },
      ]);
      expect(await db.query(scheduled)).toEqual([{ payload: '{}' }]);
      await db.query(`UPDATE "${db.schema}".history SET payload = $1 WHERE workflow_id = 'nameless' AND seq = 2`, [row!.payload]);
      expect(await engine.result('nameless', { timeoutMs: 10_000 })).toBe('worked then');
    } finally {
      await engine.close();
    }
  });

  it.each(misshapenFields)(
    'takes an $eventType row $change for an unreadable row, not for changed code: the workflow is not parked, and runs on once the row is repaired',
    async ({ eventType, change, edit }) => {
      const setPayload = `UPDATE "${db.schema}".history SET payload = $1 WHERE workflow_id = 'misshapen' AND seq = $2`;
      await expectTakenForUnreadable(db, { workflowId: 'misshapen', eventType, change, says: { eventType } }, async ({ seq, payload }) => {
        const edited = JSON.parse(payload) as Record<string, unknown>;
        edit(edited);
        await db.query(setPayload, [JSON.stringify(edited), seq]);
        return () => db.query(setPayload, [payload, seq]);
      });
    },
  );

  it.each(brokenRows)(
    'takes an $eventType row $change for an unreadable row, not for changed code: the workflow is not parked, and runs on once the row is repaired',
    async ({ eventType, change, set, repair }) => {
      const assign = (assignment: string, seq: number) =>
        db.query(`UPDATE "${db.schema}".history SET ${assignment} WHERE workflow_id = 'broken' AND seq = $1`, [seq]);
      await expectTakenForUnreadable(db, { workflowId: 'broken', eventType, change }, async ({ seq }) => {
        await assign(set, seq);
        return () => assign(repair, seq);
      });
    },
  );

  it('parks a workflow whose EventWaitStarted row names another event: well formed, the row is taken for changed code', async () => {
    const first = await startEngine(db, { workflows: { waitsForGo } });
    try {
      await first.startWorkflow(waitsForGo, undefined, { workflowId: 'renamed' });
      await waitFor(async () => (await first.inspect('renamed')).waitingOn.events.length > 0, 'the wait');
    } finally {
      await first.close();
    }
    await db.query(`UPDATE "${db.schema}".history SET payload = $1 WHERE workflow_id = 'renamed' AND type = 'EventWaitStarted'`, [
      '{"eventName":"stop"}',
    ]);
    const second = await startEngine(db, { workflows: { waitsForGo } });
    try {
      await second.sendEvent('renamed', 'go', 'now');
      const parked = await waitFor(async () => (await second.inspect('renamed')).error, 'the workflow to be parked');
      expect(parked).toMatchObject({ name: 'NonDeterminismError' });
      expect(parked.message).toMatch(/expected waitEvent #1 stop, got waitEvent #1 go/);
    } finally {
      await second.close();
    }
  });

  it('inspect names the workflow and the history row it cannot read, and changes nothing stored', async () => {
    const engine = await startEngine(db, { workflows: { waitsForGo } });
    const client = await openClient(db);
    try {
      await engine.startWorkflow(waitsForGo, undefined, { workflowId: 'hand-edited' });
      await waitFor(async () => (await engine.inspect('hand-edited')).waitingOn.events.length > 0, 'the wait');
      const stored = async (): Promise<unknown[]> => [
        await db.query(`SELECT * FROM "${db.schema}".workflows WHERE id = 'hand-edited'`),
        await db.query(`SELECT * FROM "${db.schema}".history WHERE workflow_id = 'hand-edited' ORDER BY seq`),
      ];
      // Not JSON, and JSON that is not an object: the second row, the wait, either way.
      for (const payload of ['{"eventName":', '["go"]']) {
        await db.query(`UPDATE "${db.schema}".history SET payload = $1 WHERE workflow_id = 'hand-edited' AND seq = 2`, [payload]);
        const before = await stored();
        for (const reader of [engine, client]) {
          const error = await reader.inspect('hand-edited').then(
            () => 'inspected',
            (e: unknown) => e,
          );
          expect(error).toBeInstanceOf(UnreadableHistoryError);
          expect(error).toMatchObject({
            code: ErrorCode.UnreadableHistory,
            workflowId: 'hand-edited',
            seq: 2,
            eventType: 'EventWaitStarted',
          });
        }
        expect(await stored()).toEqual(before);
      }
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('gives the same results with one cached actor (constant rehydration) as with all cached', async () => {
    const cached = await runAll(uncachedDb, 10_000);
    const evicting = await runAll(db, 1);
    expect(evicting).toEqual(cached);
    expect(cached[3]).toMatchObject({ doubled: 6, first: 14, second: 'timer' });
  });

  it('parks a workflow that calls ctx after awaiting something that is not a ctx command, instead of showing a wait no step recorded', async () => {
    async function awaitsPlainTimer(ctx: WorkflowContext): Promise<string> {
      const { echo } = ctx.activities<Fixtures>();
      // Not a durable timer: it resolves between steps, when nothing can record what follows.
      await new Promise((resolve) => setTimeout(resolve, 10));
      return (await echo('late')) as string;
    }
    const engine = await startEngine(db, { workflows: { awaitsPlainTimer }, activities: fixtureActivities });
    try {
      await engine.startWorkflow(awaitsPlainTimer, undefined, { workflowId: 'stray' });
      const parked = await waitUntilParked(engine, 'stray');
      expect(parked.error!.details).toMatchObject({ activation: 2, commandId: 1, got: 'scheduleActivity #1 echo' });
      expect(parked.waitingOn.activities).toEqual([]);
      expect(parked.history.map((e) => e.type)).toEqual(['WorkflowStarted']);
      expect(await readMetric(engine, MetricName.NonDeterminismErrors)).toBe(1);
    } finally {
      await engine.close();
    }
  });

  it('parks a workflow that sets a variable after awaiting something that is not a ctx command, instead of showing a value no step stored', async () => {
    async function setsVarLate(ctx: WorkflowContext): Promise<string> {
      const go = ctx.waitForEvent<string>('go');
      ctx.setVar('early', 1);
      await new Promise((resolve) => setTimeout(resolve, 10));
      ctx.setVar('late', true);
      return go;
    }
    const engine = await startEngine(db, { workflows: { setsVarLate } });
    try {
      await engine.startWorkflow(setsVarLate, undefined, { workflowId: 'stray-var' });
      // Until the fix the variable showed at once, live only, and the workflow ran on.
      const state = await waitFor(async () => {
        const s = await engine.inspect('stray-var');
        return (s.error !== undefined || 'late' in s.vars) && s;
      }, 'the parking or the variable');
      expect(state.vars).toEqual({ early: 1 });
      expect(state.error).toMatchObject({ name: 'NonDeterminismError', code: ErrorCode.NonDeterminism });
      expect(state.error!.details).toMatchObject({ activation: 2, commandId: null, got: 'setVar late' });
      expect(state.history.map((e) => e.type)).toEqual(['WorkflowStarted', 'EventWaitStarted']);
      expect(await readMetric(engine, MetricName.NonDeterminismErrors)).toBe(1);
    } finally {
      await engine.close();
    }
  });

  it.each([
    { method: 'random', call: (ctx: WorkflowContext) => void ctx.random(), got: 'random' },
    { method: 'onEvent', call: (ctx: WorkflowContext) => ctx.onEvent('kept', () => undefined), got: 'onEvent kept' },
    { method: 'waitForEvent of a kept event', call: (ctx: WorkflowContext) => void ctx.waitForEvent('kept'), got: 'waitForEvent kept' },
  ])('parks a workflow that calls $method after awaiting something that is not a ctx command, though the call emits no command', async ({ call, got }) => {
    let reached!: () => void;
    const isReached = new Promise<void>((resolve) => (reached = resolve));
    async function callsLate(ctx: WorkflowContext): Promise<string> {
      const go = ctx.waitForEvent<string>('go');
      await ctx.waitForEvent('ready');
      await new Promise((resolve) => setTimeout(resolve, 10));
      call(ctx);
      reached();
      return go;
    }
    const engine = await startEngine(db, { workflows: { callsLate } });
    try {
      await engine.startWorkflow(callsLate, undefined, { workflowId: 'stray-change' });
      await engine.sendEvent('stray-change', 'kept', 1);
      await engine.sendEvent('stray-change', 'ready');
      await isReached;
      // Left running, the workflow would take this and complete.
      await engine.sendEvent('stray-change', 'go', 'done');
      const state = await waitFor(async () => {
        const s = await engine.inspect('stray-change');
        return (s.error !== undefined || s.status !== 'running') && s;
      }, 'the parking or the end');
      expect(state.status).toBe('running');
      expect(state.error).toMatchObject({ name: 'NonDeterminismError', code: ErrorCode.NonDeterminism });
      expect(state.error!.details).toMatchObject({ commandId: null, got });
      expect(await readMetric(engine, MetricName.NonDeterminismErrors)).toBe(1);
    } finally {
      await engine.close();
    }
  });

  it('parks a workflow whose code changed under it with NonDeterminismError; others go on; the old code runs it on', async () => {
    async function changing(ctx: WorkflowContext): Promise<string> {
      const { echo } = ctx.activities<Fixtures>();
      await echo('v1');
      await ctx.waitForEvent('go');
      return 'v1 done';
    }
    const v1 = await startEngine(db, { workflows: { changing }, activities: fixtureActivities });
    try {
      await v1.startWorkflow(changing, undefined, { workflowId: 'old' });
      await waitFor(async () => (await v1.inspect('old')).waitingOn.events.length > 0, 'the wait');
    } finally {
      await v1.close();
    }

    // Same name, different code: the first activity is now another one.
    async function changed(ctx: WorkflowContext): Promise<string> {
      const { double } = ctx.activities<Fixtures>();
      await double(1);
      await ctx.waitForEvent('go');
      return 'v2 done';
    }
    const v2 = await startEngine(db, { workflows: { changing: changed }, activities: fixtureActivities });
    try {
      await v2.sendEvent('old', 'go');
      const parked = await waitUntilParked(v2, 'old');
      expect(parked.error!.message).toMatch(/activation 1, command #1: expected scheduleActivity #1 echo, got scheduleActivity #1 double/);
      expect(parked.error!.details).toEqual({
        activation: 1,
        commandId: 1,
        expected: 'scheduleActivity #1 echo',
        got: 'scheduleActivity #1 double',
      });
      const fresh = await v2.startWorkflow(changed, undefined, { workflowId: 'new' });
      await waitFor(async () => (await v2.inspect('new')).waitingOn.events.length > 0, 'the new wait');
      await v2.sendEvent('new', 'go');
      expect(await fresh.result()).toBe('v2 done');
      expect((await v2.inspect('old')).status).toBe('running');
      expect(await readMetric(v2, MetricName.NonDeterminismErrors)).toBe(1);
    } finally {
      await v2.close();
    }

    // Still the changed code, from another build (its stack names other files): a restart brings
    // it back with its event and it stays parked, but it was parked before, so this engine does
    // not count it.
    await db.query(`UPDATE "${db.schema}".workflows SET error = jsonb_set(error::jsonb, '{stack}', '"at another build"')::text WHERE id = 'old'`);
    const again = await startEngine(db, { workflows: { changing: changed }, activities: fixtureActivities });
    try {
      await waitFor(async () => (await readMetric(again, MetricName.ActorRehydrations)) >= 1, 'the parked workflow to be brought back');
      expect((await again.inspect('old')).error).toMatchObject({ name: 'NonDeterminismError' });
      expect(await readMetric(again, MetricName.NonDeterminismErrors)).toBe(0);
    } finally {
      await again.close();
    }

    // Back to the code it ran: a restart's recovery brings it in with the event it has waiting
    // (polls leave a parked workflow's events alone), and it goes on from where it was.
    const v3 = await startEngine(db, { workflows: { changing }, activities: fixtureActivities });
    try {
      expect(await v3.result('old', { timeoutMs: 10_000 })).toBe('v1 done');
      expect((await v3.inspect('old')).error).toBeUndefined();
    } finally {
      await v3.close();
    }
  });

  it('brings back every parked workflow with events at a restart, however many events another one has', async () => {
    async function waitsForGo(ctx: WorkflowContext): Promise<string> {
      ctx.onEvent('noise', () => undefined);
      await ctx.waitForEvent('go');
      return 'went';
    }
    const first = await startEngine(db, { workflows: { waitsForGo } });
    try {
      for (const id of ['chatty', 'quiet']) await first.startWorkflow(waitsForGo, undefined, { workflowId: id });
      await waitFor(async () => (await first.inspect('quiet')).waitingOn.events.length > 0, 'the waits');
    } finally {
      await first.close();
    }
    // Both parked, as a deploy of code that changed under them leaves them, and sent events since:
    // more to one of them than a read of the inbox takes at once.
    await db.query(`UPDATE "${db.schema}".workflows SET error = '{"name":"NonDeterminismError"}'`);
    await db.query(
      `INSERT INTO "${db.schema}".inbox (workflow_id, name, event_id) SELECT 'chatty', 'noise', 'n' || g FROM generate_series(1, 10000) g`,
    );
    await db.query(`INSERT INTO "${db.schema}".inbox (workflow_id, name, event_id) VALUES ('quiet', 'go', 'go')`);
    const fixed = await startEngine(db, { workflows: { waitsForGo } });
    try {
      expect(await fixed.result('quiet', { timeoutMs: 10_000 })).toBe('went');
      // Brought back too; its step that clears the error may commit after quiet's end.
      await waitFor(async () => (await fixed.inspect('chatty')).error === undefined, 'chatty to run on');
    } finally {
      await fixed.close();
    }
  });

  it('parks a workflow whose code hands a recorded event to another wait than the run that recorded it', async () => {
    async function twoGos(ctx: WorkflowContext): Promise<unknown> {
      return [await ctx.waitForEvent('go'), await ctx.waitForEvent('go')];
    }
    const first = await startEngine(db, { workflows: { twoGos } });
    try {
      await first.startWorkflow(twoGos, undefined, { workflowId: 'routed' });
      await first.sendEvent('routed', 'go', 1);
      await waitFor(async () => (await first.inspect('routed')).waitingOn.events[0]?.commandId === 2, 'the second wait');
    } finally {
      await first.close();
    }
    // As a run whose event went to the second wait would have recorded it (the commands are the same).
    await db.query(
      `UPDATE "${db.schema}".history SET payload = replace(payload, '"resolves":1', '"resolves":2')
       WHERE workflow_id = 'routed' AND type = 'EventReceived'`,
    );
    const second = await startEngine(db, { workflows: { twoGos } });
    try {
      await second.sendEvent('routed', 'go', 2);
      const parked = await waitFor(async () => (await second.inspect('routed')).error, 'the workflow to be parked');
      expect(parked).toMatchObject({ name: 'NonDeterminismError' });
      expect(parked.message).toMatch(/expected event "go" taken by wait #2, got event "go" taken by wait #1/);
    } finally {
      await second.close();
    }
  });

  it('keeps the recorded timer and waits when changed code sleeps for another time or changes a timeout: not parked, nothing rescheduled', async () => {
    const HOUR = 3_600_000;
    async function pausing(ctx: WorkflowContext): Promise<string> {
      await ctx.sleep(HOUR);
      return 'woke';
    }
    async function waiting(ctx: WorkflowContext): Promise<string> {
      return ctx.waitForEvent<string>('go');
    }
    async function patient(ctx: WorkflowContext): Promise<string> {
      return ctx.waitForEvent<string>('go', { timeoutMs: HOUR });
    }
    const v1 = await startEngine(db, { workflows: { pausing, waiting, patient } });
    let dueAt: Date;
    let timeoutAt: Date;
    try {
      await v1.startWorkflow(pausing, undefined, { workflowId: 'sleeper' });
      await v1.startWorkflow(waiting, undefined, { workflowId: 'waiter' });
      await v1.startWorkflow(patient, undefined, { workflowId: 'patient' });
      await waitFor(async () => (await v1.inspect('waiter')).waitingOn.events.length > 0, 'the wait');
      dueAt = await waitFor(async () => (await v1.inspect('sleeper')).waitingOn.timers[0]?.dueAt, 'the timer');
      timeoutAt = await waitFor(async () => (await v1.inspect('patient')).waitingOn.events[0]?.timeoutAt, 'the wait with a timeout');
    } finally {
      await v1.close();
    }

    // Same names and commands; only the duration and the timeouts differ.
    async function pausingLess(ctx: WorkflowContext): Promise<string> {
      await ctx.sleep(1);
      return 'woke';
    }
    async function waitingWithTimeout(ctx: WorkflowContext): Promise<string> {
      return ctx.waitForEvent<string>('go', { timeoutMs: 1 });
    }
    async function impatient(ctx: WorkflowContext): Promise<string> {
      return ctx.waitForEvent<string>('go');
    }
    const v2 = await startEngine(db, { workflows: { pausing: pausingLess, waiting: waitingWithTimeout, patient: impatient } });
    try {
      // An event that nothing waits for brings each workflow into memory, replayed against the new code.
      for (const workflowId of ['sleeper', 'waiter', 'patient']) await v2.sendEvent(workflowId, 'poke');
      await waitFor(async () => (await readMetric(v2, MetricName.ActorRehydrations)) >= 3, 'the workflows replayed');
      const sleeper = await v2.inspect('sleeper');
      expect(sleeper.error).toBeUndefined();
      expect(sleeper.waitingOn.timers.map((t) => t.dueAt)).toEqual([dueAt]);
      const waiter = await v2.inspect('waiter');
      expect(waiter.error).toBeUndefined();
      expect(waiter.waitingOn.events).toEqual([{ commandId: 1, eventName: 'go' }]);
      expect(waiter.waitingOn.timers).toEqual([]);
      const waitingPatiently = await v2.inspect('patient');
      expect(waitingPatiently.waitingOn.events).toEqual([{ commandId: 1, eventName: 'go', timeoutAt }]);
      expect(waitingPatiently.waitingOn.timers).toEqual([{ commandId: 1, dueAt: timeoutAt }]);

      await v2.sendEvent('waiter', 'go', 'taken, no timeout');
      expect(await v2.result('waiter', { timeoutMs: 10_000 })).toBe('taken, no timeout');
      // The event cancels the recorded timeout, which the new code does not know of.
      await v2.sendEvent('patient', 'go', 'taken before the recorded timeout');
      expect(await v2.result('patient', { timeoutMs: 10_000 })).toBe('taken before the recorded timeout');
      expect(await db.query(`SELECT 1 FROM "${db.schema}".timers WHERE workflow_id = 'patient'`)).toEqual([]);
      expect(await readMetric(v2, MetricName.NonDeterminismErrors)).toBe(0);
    } finally {
      await v2.close();
    }
  });
});
