import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { type Engine, EventIdReusedError, MetricName, TimeoutError, type WorkflowContext, WorkflowClosedError } from 'duraflow';

import { backends, isWaitingForLock, lockTable, serverBackends, type TestSchema, useSchema } from '../helpers/database.js';
import { openClient, quietLogger, readMetric, startEngine } from '../helpers/engines.js';
import { heldActivity } from '../helpers/held-activity.js';
import { waitFor } from '../helpers/wait-for.js';

/** Waits for approval; with `busyFirst`, runs the activity `busy` first (see `heldActivity`). */
async function approval(ctx: WorkflowContext, input: { busyFirst: boolean }): Promise<unknown> {
  if (input.busyFirst) await ctx.activities<{ busy(): string }>().busy();
  ctx.setVar('stage', 'waiting');
  const ev = await ctx.waitForEvent<{ by: string }>('approve');
  ctx.setVar('stage', 'approved');
  return ev;
}

async function approvalWithTimeout(ctx: WorkflowContext, input: { timeoutMs: number }): Promise<string> {
  try {
    const ev = await ctx.waitForEvent<{ by: string }>('approve', { timeoutMs: input.timeoutMs });
    return `approved by ${ev.by}`;
  } catch (error) {
    if (error instanceof TimeoutError) return 'timed out';
    throw error;
  }
}

async function collector(ctx: WorkflowContext): Promise<string[]> {
  const notes: string[] = [];
  ctx.onEvent<string>('note', (note) => {
    notes.push(note);
    ctx.setVar('notes', notes.length);
  });
  await ctx.waitForEvent('done');
  return notes;
}

async function delayedWait(ctx: WorkflowContext): Promise<unknown> {
  return ctx.waitForEvent('go');
}

async function twoInOrder(ctx: WorkflowContext): Promise<unknown> {
  return [await ctx.waitForEvent('go'), await ctx.waitForEvent('go')];
}

/** Starts a wait with a timeout from an event handler. */
async function approvalOnOpen(ctx: WorkflowContext): Promise<unknown> {
  let approved: Promise<unknown> | undefined;
  ctx.onEvent('open', () => {
    approved ??= ctx.waitForEvent('approve', { timeoutMs: 3_600_000 });
  });
  await ctx.waitForEvent('close');
  await ctx.waitForEvent('end');
  return approved;
}

/** Counts notes with a handler, which after the first also waits for the next one. */
async function handlerThenWait(ctx: WorkflowContext): Promise<unknown> {
  const seen: unknown[] = [];
  let next: Promise<unknown> | undefined;
  ctx.onEvent('note', (note) => {
    seen.push(note);
    if (seen.length === 1) next = ctx.waitForEvent('note');
  });
  await ctx.waitForEvent('done');
  return { seen, next: await next };
}

/**
 * Registers its note handler only after 'open', so the notes sent before are kept for it. On the
 * first note the handler starts a wait and registers a second handler; the wait's outcome is
 * raced with a sleep so that one left waiting shows as such.
 */
async function keptNotesThenHandler(ctx: WorkflowContext): Promise<unknown> {
  await ctx.waitForEvent('open');
  const seen: unknown[] = [];
  const seenLater: unknown[] = [];
  let next: Promise<unknown> | undefined;
  ctx.onEvent('note', (note) => {
    seen.push(note);
    if (seen.length > 1) return;
    next = ctx.waitForEvent('note');
    ctx.onEvent('note', (later) => void seenLater.push(later));
  });
  const took = await Promise.race([next, ctx.sleep(0).then(() => 'still waiting')]);
  await ctx.waitForEvent('done');
  return { seen, seenLater, next: took };
}

async function quick(): Promise<string> {
  return 'quick';
}

async function delayed(ctx: WorkflowContext, input: { n: number }): Promise<{ n: number; startedAt: number }> {
  return { n: input.n, startedAt: ctx.info.startedAt.getTime() };
}

describe.each(backends)('events and delayed starts on $name', (backend) => {
  let db: TestSchema;
  beforeEach(async () => {
    db = await backend.schema();
  });
  afterEach(async () => {
    await db.drop();
  });

  it('keeps an event sent before the wait and hands it over', async () => {
    const held = heldActivity();
    const engine = await startEngine(db, { workflows: { approval }, inlineActivities: { busy: held.activity } });
    try {
      // The start commits the first step, so the workflow is inside `busy` (and stays there).
      const handle = await engine.startWorkflow(approval, { busyFirst: true });
      await engine.sendEvent(handle.workflowId, 'approve', { by: 'early' });
      // The event arrived before the wait: the workflow consumes it (out of the inbox, into its
      // history) and keeps it for the wait to come.
      await waitFor(
        async () => (await engine.inspect(handle.workflowId)).history.some((e) => e.type === 'EventReceived'),
        'the workflow to take in the event',
      );
      // Read again: one inspect's queries are not one snapshot, this one starts after the commit.
      const busy = await engine.inspect(handle.workflowId);
      expect(busy.status).toBe('running');
      expect(busy.vars.stage).toBeUndefined();
      expect(busy.waitingOn.activities).toEqual([expect.objectContaining({ activityName: 'busy' })]);
      expect(busy.waitingOn.events).toEqual([]);
      expect(busy.queuedEvents).toEqual([]);
      const early = busy.history.find((e) => e.type === 'EventReceived');
      expect(early).toMatchObject({ eventName: 'approve', payload: { by: 'early' } });
      expect(early).not.toHaveProperty('resolves');

      held.release();
      expect(await handle.result()).toEqual({ by: 'early' });
      const done = await engine.inspect(handle.workflowId);
      expect(done.vars.stage).toBe('approved');
      // The wait took the kept event at once: it never had to record a wait of its own.
      expect(done.history.map((e) => e.type)).toEqual([
        'WorkflowStarted',
        'ActivityScheduled',
        'EventReceived',
        'ActivityCompleted',
        'WorkflowCompleted',
      ]);
    } finally {
      held.release();
      await engine.close();
    }
  });

  it('delivers an event sent after the wait began', async () => {
    const engine = await startEngine(db, { workflows: { approval } });
    try {
      const handle = await engine.startWorkflow(approval, { busyFirst: false });
      const waiting = await waitFor(async () => {
        const s = await engine.inspect(handle.workflowId);
        return s.waitingOn.events.length > 0 && s;
      }, 'the workflow to wait for its event');
      expect(waiting.waitingOn.events[0]).toMatchObject({ eventName: 'approve' });
      expect(waiting.vars.stage).toBe('waiting');
      await engine.sendEvent(handle.workflowId, 'approve', { by: 'ops' });
      expect(await handle.result()).toEqual({ by: 'ops' });
      const received = (await engine.inspect(handle.workflowId)).history.find((e) => e.type === 'EventReceived');
      expect(received).toMatchObject({ eventName: 'approve', payload: { by: 'ops' } });
    } finally {
      await engine.close();
    }
  });

  it('delivers an event sent through the engine after one a client sent before it, in the order they were sent', async () => {
    const engine = await startEngine(db, { workflows: { twoInOrder } });
    const client = await openClient(db);
    try {
      // The engine hands its own sends to the workflow at once; the client's reaches it through
      // the notice and the poll. Sent one after the other, they must arrive so too.
      for (let round = 0; round < 5; round++) {
        const handle = await engine.startWorkflow(twoInOrder, undefined);
        await client.sendEvent(handle.workflowId, 'go', 'from the client');
        await engine.sendEvent(handle.workflowId, 'go', 'from the engine');
        expect(await handle.result()).toEqual(['from the client', 'from the engine']);
      }
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('takes a repeated send of a delivered event as done, even after the event ended the workflow', async () => {
    const engine = await startEngine(db, { workflows: { approval } });
    try {
      const handle = await engine.startWorkflow(approval, { busyFirst: false });
      await engine.sendEvent(handle.workflowId, 'approve', { by: 'ops' }, { eventId: 'approval-1' });
      expect(await handle.result()).toEqual({ by: 'ops' });
      // A retry of the same send (its first answer lost): delivered already, so nothing to refuse.
      await engine.sendEvent(handle.workflowId, 'approve', { by: 'ops' }, { eventId: 'approval-1' });
      // A new event for the finished workflow is refused.
      await expect(engine.sendEvent(handle.workflowId, 'approve', { by: 'late' }, { eventId: 'approval-2' })).rejects.toBeInstanceOf(
        WorkflowClosedError,
      );
      const received = (await engine.inspect(handle.workflowId)).history.filter((e) => e.type === 'EventReceived');
      expect(received).toHaveLength(1);
    } finally {
      await engine.close();
    }
  });

  it('refuses an event id sent again with another payload or name, keeping the first event as it was', async () => {
    const engine = await startEngine(db, { workflows: { approval } });
    try {
      const handle = await engine.startWorkflow(approval, { busyFirst: false });
      await engine.sendEvent(handle.workflowId, 'approve', { by: 'ops' }, { eventId: 'approval-1' });
      const otherPayload = engine.sendEvent(handle.workflowId, 'approve', { by: 'intruder' }, { eventId: 'approval-1' });
      await expect(otherPayload).rejects.toBeInstanceOf(EventIdReusedError);
      await expect(otherPayload).rejects.toMatchObject({ code: 'DURAFLOW_EVENT_ID_REUSED', workflowId: handle.workflowId, eventId: 'approval-1' });
      await expect(engine.sendEvent(handle.workflowId, 'reject', { by: 'ops' }, { eventId: 'approval-1' })).rejects.toBeInstanceOf(
        EventIdReusedError,
      );
      await expect(engine.sendEvent(handle.workflowId, 'approve', undefined, { eventId: 'approval-1' })).rejects.toBeInstanceOf(
        EventIdReusedError,
      );
      expect(await handle.result()).toEqual({ by: 'ops' });
      // After the event was taken, a true retry is still a duplicate, and a different one still refused.
      await engine.sendEvent(handle.workflowId, 'approve', { by: 'ops' }, { eventId: 'approval-1' });
      await expect(engine.sendEvent(handle.workflowId, 'approve', { by: 'late' }, { eventId: 'approval-1' })).rejects.toBeInstanceOf(
        EventIdReusedError,
      );
      const rows = await db.query<{ name: string; payload: string }>(
        `SELECT name, payload FROM "${db.schema}".inbox WHERE workflow_id = $1`,
        [handle.workflowId],
      );
      expect(rows).toEqual([{ name: 'approve', payload: JSON.stringify({ by: 'ops' }) }]);
    } finally {
      await engine.close();
    }
  });

  it('times a wait out with TimeoutError, and a timely event cancels the timeout', async () => {
    const engine = await startEngine(db, { workflows: { approvalWithTimeout } });
    try {
      const late = await engine.startWorkflow(approvalWithTimeout, { timeoutMs: 50 });
      expect(await late.result()).toBe('timed out');
      const onTime = await engine.startWorkflow(approvalWithTimeout, { timeoutMs: 60_000 });
      await waitFor(async () => (await engine.inspect(onTime.workflowId)).waitingOn.events.length > 0, 'the wait');
      await engine.sendEvent(onTime.workflowId, 'approve', { by: 'ops' });
      expect(await onTime.result()).toBe('approved by ops');
      const rows = await db.query(`SELECT * FROM "${db.schema}".timers WHERE workflow_id = $1`, [onTime.workflowId]);
      expect(rows).toHaveLength(0);
    } finally {
      await engine.close();
    }
  });

  it('calls onEvent for every event of its name', async () => {
    const engine = await startEngine(db, { workflows: { collector } });
    try {
      const handle = await engine.startWorkflow(collector, undefined);
      for (const note of ['a', 'b', 'c']) await engine.sendEvent(handle.workflowId, 'note', note);
      await waitFor(async () => (await engine.inspect(handle.workflowId)).vars.notes === 3, 'three notes');
      await engine.sendEvent(handle.workflowId, 'done');
      expect(await handle.result()).toEqual(['a', 'b', 'c']);
    } finally {
      await engine.close();
    }
  });

  it('keeps a delayed start pending until its time', async () => {
    const engine = await startEngine(db, { workflows: { delayed } });
    try {
      // Read as pending when its time is an hour off: one due in 400 ms may have started (or be
      // due) by the time a loaded machine answers the inspect.
      const later = await engine.startWorkflow(delayed, { n: 0 }, { startAt: Date.now() + 3_600_000 });
      const pending = await engine.inspect(later.workflowId);
      expect(pending.status).toBe('pending');
      expect(pending.pendingReason).toMatch(/scheduled to start/);
      expect(pending.history).toEqual([]);
      const startAt = new Date(Date.now() + 400);
      const handle = await engine.startWorkflow(delayed, { n: 1 }, { startAt });
      const out = await handle.result();
      expect(out.n).toBe(1);
      expect(out.startedAt).toBeGreaterThanOrEqual(startAt.getTime());
      expect((await engine.inspect(later.workflowId)).status).toBe('pending');
    } finally {
      await engine.close();
    }
  });

  it('gives a delayed workflow, when it starts, the events sent to it before, in the order they were sent', async () => {
    // No poll until long after: only the start itself can bring the waiting events in.
    const options = { workflows: { twoInOrder }, pollIntervalMs: 600_000 };
    const engine = await startEngine(db, options);
    const client = await openClient(db);
    let later: Engine | undefined;
    try {
      // Due in an hour: still pending when the events come, however slow this machine is.
      const handle = await engine.startWorkflow(twoInOrder, undefined, { startAt: Date.now() + 3_600_000 });
      await client.sendEvent(handle.workflowId, 'go', 'from another process, first');
      await engine.sendEvent(handle.workflowId, 'go', 'from the engine, second');
      expect((await engine.inspect(handle.workflowId)).status).toBe('pending');
      // The API cannot move a start: an engine started after the start time is moved to now
      // finds it due, and starts it.
      await engine.close();
      await db.query(`UPDATE "${db.schema}".workflows SET start_at = now() WHERE id = $1`, [handle.workflowId]);
      later = await startEngine(db, options);
      expect(await later.result(handle.workflowId, { timeoutMs: 10_000 })).toEqual([
        'from another process, first',
        'from the engine, second',
      ]);
    } finally {
      await client.close();
      await later?.close();
      await engine.close();
    }
  });

  it('keeps no actor in memory for a delayed workflow an event was sent to', async () => {
    const engine = await startEngine(db, { workflows: { delayedWait, quick }, maxCachedWorkflows: 2 });
    try {
      for (const workflowId of ['later-1', 'later-2']) {
        await engine.startWorkflow(delayedWait, undefined, { workflowId, startAt: Date.now() + 3_600_000 });
        await engine.sendEvent(workflowId, 'go', 'early');
      }
      // Neither starts for an hour: holding their events in memory would fill the cache till then.
      const handle = await engine.startWorkflow(quick, undefined, { workflowId: 'now' });
      expect(await handle.result({ timeoutMs: 10_000 })).toBe('quick');
    } finally {
      await engine.close();
    }
  });

  it('stores no timeout for a wait that takes its event in the step that starts it', async () => {
    const engine = await startEngine(db, { workflows: { approvalOnOpen } });
    const client = await openClient(db);
    try {
      await engine.startWorkflow(approvalOnOpen, undefined, { workflowId: 'h', startAt: Date.now() + 300 });
      // Read together when it starts, the events make one step: the handler of 'open' starts the
      // wait for 'approve', and the next event ends it.
      for (const name of ['open', 'approve', 'close']) await engine.sendEvent('h', name, name);
      await waitFor(
        async () => (await client.inspect('h')).history.filter((e) => e.type === 'EventReceived').length === 3,
        'the step that takes the three events',
      );
      expect(await db.query(`SELECT command_id FROM "${db.schema}".timers WHERE workflow_id = 'h'`)).toEqual([]);
      // Read from the history alone, that wait is over too.
      expect((await client.inspect('h')).waitingOn).toMatchObject({ events: [{ eventName: 'end' }], timers: [] });
      await engine.sendEvent('h', 'end');
      expect(await engine.result('h', { timeoutMs: 10_000 })).toBe('approve');
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('gives a wait that an event handler starts the next event of that name, not the one it handles', async () => {
    const engine = await startEngine(db, { workflows: { handlerThenWait } });
    try {
      await engine.startWorkflow(handlerThenWait, undefined, { workflowId: 'notes' });
      for (const note of ['first', 'second']) await engine.sendEvent('notes', 'note', note);
      await engine.sendEvent('notes', 'done');
      expect(await engine.result('notes', { timeoutMs: 10_000 })).toEqual({ seen: ['first', 'second'], next: 'second' });
    } finally {
      await engine.close();
    }
  });

  it('hands kept events to a late handler as if they came then: a wait or a handler it starts takes the events after the one it handles', async () => {
    const engine = await startEngine(db, { workflows: { keptNotesThenHandler } });
    try {
      await engine.startWorkflow(keptNotesThenHandler, undefined, { workflowId: 'kept-notes' });
      for (const note of ['first', 'second', 'third']) await engine.sendEvent('kept-notes', 'note', note);
      await engine.sendEvent('kept-notes', 'open');
      await engine.sendEvent('kept-notes', 'done');
      expect(await engine.result('kept-notes', { timeoutMs: 10_000 })).toEqual({
        seen: ['first', 'second', 'third'],
        seenLater: ['second', 'third'],
        next: 'second',
      });
    } finally {
      await engine.close();
    }
  });

  it('orders the events and wait timeouts that came while no engine ran by their time, at the restart', async () => {
    const engine = await startEngine(db, { workflows: { approvalWithTimeout } });
    try {
      for (const workflowId of ['in-time', 'too-late']) {
        await engine.startWorkflow(approvalWithTimeout, { timeoutMs: 3_600_000 }, { workflowId });
        await waitFor(async () => (await engine.inspect(workflowId)).waitingOn.events.length > 0, 'the wait');
      }
    } finally {
      await engine.close();
    }
    const client = await openClient(db);
    try {
      for (const workflowId of ['in-time', 'too-late']) await client.sendEvent(workflowId, 'approve', { by: workflowId });
    } finally {
      await client.close();
    }
    // Time passes with no engine running: one approval was sent before its wait timed out, the
    // other after.
    const schema = `"${db.schema}"`;
    await db.query(`UPDATE ${schema}.timers SET due_at = now() - interval '2 minutes'`);
    await db.query(`UPDATE ${schema}.inbox SET created_at = now() - CASE workflow_id WHEN 'in-time' THEN interval '3 minutes' ELSE interval '1 minute' END`);
    const restarted = await startEngine(db, { workflows: { approvalWithTimeout } });
    try {
      expect(await restarted.result('in-time', { timeoutMs: 10_000 })).toBe('approved by in-time');
      expect(await restarted.result('too-late', { timeoutMs: 10_000 })).toBe('timed out');
    } finally {
      await restarted.close();
    }
  });

  it('orders by their time the wait timeouts and the events beyond the first read of the inbox, at the restart', async () => {
    const engine = await startEngine(db, { workflows: { approvalWithTimeout } });
    try {
      for (const workflowId of ['busy', 'in-time', 'too-late']) {
        await engine.startWorkflow(approvalWithTimeout, { timeoutMs: 3_600_000 }, { workflowId });
        await waitFor(async () => (await engine.inspect(workflowId)).waitingOn.events.length > 0, 'the wait');
      }
    } finally {
      await engine.close();
    }
    const schema = `"${db.schema}"`;
    // More events, sent earlier, than one read of the inbox takes (10,000 rows).
    await db.query(
      `INSERT INTO ${schema}.inbox (workflow_id, name, event_id, created_at)
       SELECT 'busy', 'noise', 'noise-' || i, now() - interval '10 minutes' FROM generate_series(1, 10001) AS i`,
    );
    const client = await openClient(db);
    try {
      for (const workflowId of ['in-time', 'too-late']) await client.sendEvent(workflowId, 'approve', { by: workflowId });
    } finally {
      await client.close();
    }
    await db.query(`UPDATE ${schema}.timers SET due_at = now() - interval '2 minutes' WHERE workflow_id <> 'busy'`);
    await db.query(
      `UPDATE ${schema}.inbox SET created_at = now() - CASE workflow_id WHEN 'in-time' THEN interval '3 minutes' ELSE interval '1 minute' END
       WHERE workflow_id <> 'busy'`,
    );
    const restarted = await startEngine(db, { workflows: { approvalWithTimeout } });
    try {
      expect(await restarted.result('in-time', { timeoutMs: 30_000 })).toBe('approved by in-time');
      expect(await restarted.result('too-late', { timeoutMs: 30_000 })).toBe('timed out');
    } finally {
      await restarted.close();
    }
  });

  it('deletes a timer row that outlived its wait when it fires', async () => {
    const engine = await startEngine(db, { workflows: { approvalOnOpen } });
    try {
      await engine.startWorkflow(approvalOnOpen, undefined, { workflowId: 'stale' });
      await waitFor(async () => (await engine.inspect('stale')).waitingOn.events.length > 0, 'the wait');
    } finally {
      await engine.close();
    }
    // A timeout row for a command that awaits nothing, as an older version could leave one behind.
    await db.query(`INSERT INTO "${db.schema}".timers (workflow_id, command_id, due_at) VALUES ('stale', 99, now())`);
    const restarted = await startEngine(db, { workflows: { approvalOnOpen } });
    try {
      await waitFor(
        async () => (await db.query(`SELECT 1 FROM "${db.schema}".timers WHERE workflow_id = 'stale'`)).length === 0,
        'the row to go when it fires',
      );
      expect((await restarted.inspect('stale')).waitingOn.events).toEqual([expect.objectContaining({ eventName: 'close' })]);
    } finally {
      await restarted.close();
    }
  });
});

describe.each(serverBackends)('an event racing the end of its workflow on $name', (backend) => {
  const db = useSchema(backend);

  it('keeps an event stored before the ending step committed among the queued events, not consumed unseen', async () => {
    const engine = await startEngine(db(), { workflows: { delayedWait } });
    try {
      const handle = await engine.startWorkflow(delayedWait, undefined, { workflowId: 'ends' });
      await waitFor(async () => (await engine.inspect('ends')).waitingOn.events.length > 0, 'the wait');
      // Flushes wait for this lock: the step that ends the workflow runs but does not commit.
      const lock = await lockTable(db(), 'wal_commits');
      try {
        await engine.sendEvent('ends', 'go', 'first');
        await waitFor(async () => (await readMetric(engine, MetricName.WalFlushesInFlight)) === 1, 'the ending step in flight');
        // The end is not committed, so this send is stored (and acknowledged); it reaches the
        // workflow after the step that ended it.
        await engine.sendEvent('ends', 'go', 'second', { eventId: 'second' });
      } finally {
        await lock.release();
      }
      expect(await handle.result()).toBe('first');
    } finally {
      // Whatever the engine did with the second event is committed once it has closed.
      await engine.close();
    }
    const client = await openClient(db());
    try {
      const ended = await client.inspect('ends');
      expect(ended.history.filter((e) => e.type === 'EventReceived')).toHaveLength(1);
      expect(ended.queuedEvents).toEqual([{ eventName: 'go', payload: 'second' }]);
    } finally {
      await client.close();
    }
  });
});

describe.each(serverBackends)('a poll during a recovery on $name', (backend) => {
  const db = useSchema(backend);

  it('leaves the events to the recovery under way, so a timer that came due before them fires first', async () => {
    const engine = await startEngine(db(), { workflows: { approvalWithTimeout } });
    try {
      await engine.startWorkflow(approvalWithTimeout, { timeoutMs: 3_600_000 }, { workflowId: 'too-late' });
      await waitFor(async () => (await engine.inspect('too-late')).waitingOn.events.length > 0, 'the wait');
    } finally {
      await engine.close();
    }
    const client = await openClient(db());
    try {
      await client.sendEvent('too-late', 'approve', { by: 'too-late' });
    } finally {
      await client.close();
    }
    // The approval came a minute after the wait had timed out, while no engine ran.
    const schema = `"${db().schema}"`;
    await db().query(`UPDATE ${schema}.timers SET due_at = now() - interval '2 minutes'`);
    await db().query(`UPDATE ${schema}.inbox SET created_at = now() - interval '1 minute'`);
    // The restart's recovery waits for this lock to read the timers; the polls go on meanwhile.
    const lock = await lockTable(db(), 'timers');
    let isPollDeferred = false;
    const logger = {
      ...quietLogger,
      debug(_obj: object, msg?: string) {
        if (msg?.includes('left to the recoveries under way')) isPollDeferred = true;
      },
    };
    const starting = startEngine(db(), { workflows: { approvalWithTimeout }, pollIntervalMs: 20, logger });
    let restarted: Awaited<typeof starting> | undefined;
    try {
      await waitFor(() => isWaitingForLock(db(), 'x.due_at'), 'the recovery to wait for the timers');
      // A poll either leaves the events to the recovery, or hands the approval over at once (the
      // step that takes it then waits for the lock too, to delete the timer).
      await waitFor(async () => isPollDeferred || (await isWaitingForLock(db(), 'ins_h AS')), 'a poll');
    } finally {
      await lock.release();
      restarted = await starting;
    }
    try {
      expect(await restarted.result('too-late', { timeoutMs: 10_000 })).toBe('timed out');
    } finally {
      await restarted.close();
    }
  });
});

describe.each(serverBackends)('an event sent through an engine taking a name over on $name', (backend) => {
  const db = useSchema(backend);

  /**
   * Hands `workflowId`, waiting for an event with a timeout that came due a minute ago as far as
   * the database knows (its holder armed the timer for an hour and is not told), to a standby
   * whose recovery of the name waits for a lock on the timers; `meanwhile` runs while it waits
   * (the standby also runs `delayedWait`, a name it holds from the start), then the approval is
   * sent through the standby and the lock released. Returns the result.
   */
  async function sendLateThroughTakeover(
    workflowId: string,
    meanwhile?: (standby: Engine) => Promise<void>,
    logger?: typeof quietLogger,
  ): Promise<unknown> {
    const holder = await startEngine(db(), { workflows: { approvalWithTimeout } });
    const standby = await startEngine(db(), { workflows: { approvalWithTimeout, delayedWait }, ...(logger ? { logger } : {}) });
    try {
      await holder.startWorkflow(approvalWithTimeout, { timeoutMs: 3_600_000 }, { workflowId });
      await waitFor(async () => (await holder.inspect(workflowId)).waitingOn.events.length > 0, 'the wait');
      await db().query(`UPDATE "${db().schema}".timers SET due_at = now() - interval '1 minute'`);
      const lock = await lockTable(db(), 'timers');
      try {
        await holder.close();
        await waitFor(() => isWaitingForLock(db(), 'x.due_at'), 'the standby to recover the name');
        await meanwhile?.(standby);
        await standby.sendEvent(workflowId, 'approve', { by: 'too late' });
      } finally {
        await lock.release();
      }
      return await standby.result(workflowId, { timeoutMs: 10_000 });
    } finally {
      await holder.close();
      await standby.close();
    }
  }

  it('waits for the recovery under way, so a timer that came due before it fires first', async () => {
    expect(await sendLateThroughTakeover('taken-over')).toBe('timed out');
  });

  it('delivers the events of workflows the recovery does not cover while it waits', async () => {
    let bystander: unknown;
    const result = await sendLateThroughTakeover('taken-over-beside', async (standby) => {
      await standby.startWorkflow(delayedWait, undefined, { workflowId: 'bystander' });
      await standby.sendEvent('bystander', 'go', 'not held up');
      bystander = await standby.result('bystander', { timeoutMs: 10_000 });
      // Still under way: the event did not wait for it.
      expect(await isWaitingForLock(db(), 'x.due_at')).toBe(true);
    });
    expect(bystander).toBe('not held up');
    expect(result).toBe('timed out');
  });

  it('delivers an event sent from elsewhere to a workflow the recovery does not cover, however many of its own wait before it', async () => {
    let bystander: unknown;
    const result = await sendLateThroughTakeover('taken-over-backlog', async (standby) => {
      await standby.startWorkflow(delayedWait, undefined, { workflowId: 'bystander-behind' });
      // More events of the name under recovery than one inbox read takes, all older than the next.
      await db().query(
        `INSERT INTO "${db().schema}".inbox (workflow_id, name, payload, event_id)
         SELECT 'taken-over-backlog', 'note', NULL, 'note-' || g FROM generate_series(1, 10000) g`,
      );
      const client = await openClient(db());
      try {
        await client.sendEvent('bystander-behind', 'go', 'not held up');
      } finally {
        await client.close();
      }
      bystander = await standby.result('bystander-behind', { timeoutMs: 10_000 });
      // Still under way: the event did not wait for it.
      expect(await isWaitingForLock(db(), 'x.due_at')).toBe(true);
    });
    expect(bystander).toBe('not held up');
    expect(result).toBe('timed out');
  });

  it('delivers an event sent during the recovery before one sent the moment it ends', async () => {
    const holder = await startEngine(db(), { workflows: { twoInOrder } });
    let standby: Engine | undefined;
    let second: Promise<void> | undefined;
    const logger = {
      ...quietLogger,
      debug(_obj: object, msg?: string) {
        // Before a poll could read the first event from the inbox (the start's own recovery ends
        // before the standby is returned, so this is the takeover's).
        if (msg === 'a recovery ended' && standby) second ??= standby.sendEvent('in-order', 'go', 'second');
      },
    };
    standby = await startEngine(db(), { workflows: { twoInOrder }, logger });
    try {
      await holder.startWorkflow(twoInOrder, undefined, { workflowId: 'in-order' });
      await waitFor(async () => (await holder.inspect('in-order')).waitingOn.events.length > 0, 'the wait');
      const lock = await lockTable(db(), 'timers');
      try {
        await holder.close();
        await waitFor(() => isWaitingForLock(db(), 'x.due_at'), 'the standby to recover the name');
        await standby.sendEvent('in-order', 'go', 'first');
      } finally {
        await lock.release();
      }
      await waitFor(() => second !== undefined, 'the recovery to end');
      await second;
      expect(await standby.result('in-order', { timeoutMs: 10_000 })).toEqual(['first', 'second']);
    } finally {
      await holder.close();
      await standby.close();
    }
  });

  it('waits for a retried recovery between its attempts, so a timer that came due before it fires first', async () => {
    let failedRecoveries = 0;
    const logger = {
      ...quietLogger,
      warn: (_obj: object, msg?: string) => {
        if (msg === 'recovery failed; retrying') failedRecoveries++;
      },
    };
    const failFirstAttempt = async (): Promise<void> => {
      // The first attempt fails; the next one, after a pause, waits for the lock again.
      await db().query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' AND query LIKE '%x.due_at%'`,
        [db().schema],
      );
      await waitFor(() => failedRecoveries > 0, 'the first recovery attempt to fail');
    };
    expect(await sendLateThroughTakeover('retried-takeover', failFirstAttempt, logger)).toBe('timed out');
  });
});
