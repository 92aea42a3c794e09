import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import type { ActorHost } from '../../actors/actor-host.js';
import type { ActorMessage } from '../../actors/messages.js';
import { type ActorSnapshot, WorkflowActor } from '../../actors/workflow-actor.js';
import type { WorkflowContext } from '../../actors/workflow-context.js';
import { JsonCodec } from '../../engine/codec.js';
import { workflowErrors } from '../../engine/workflow-errors.js';
import { buildWorkflowState } from '../../engine/workflow-state.js';
import type { StoredHistoryRow, TimerRow, WorkflowRow, WorkflowWrite } from '../../storage/rows.js';
import { EVENTS, stepArbitrary, workflowOf } from '../helpers/step-workflows.js';

/*
 * The replay property of replay-determinism.test.ts, one layer up: a generated workflow runs live
 * in a WorkflowActor over an in-memory database, and actors rebuilt from the history it wrote must
 * show the same state (and park, naming the step, when a command of that history is changed).
 */

const stepArb = stepArbitrary({
  activity: 4,
  parallel: 2,
  sleep: 2,
  wait: 3,
  raceEvent: 2,
  allMixed: 2,
  onEvent: 2,
  setVar: 2,
  random: 1,
  now: 1,
  unawaited: 1,
});

/** The database as the actors see it: one workflow's row and history. */
interface Stored {
  row: WorkflowRow;
  history: StoredHistoryRow[];
  timers: TimerRow[];
}

function applyWrite(stored: Stored, write: WorkflowWrite): void {
  for (const r of write.history) {
    expect(r.seq).toBe(stored.history.length + 1);
    stored.history.push({ seq: r.seq, activation: r.activation, type: r.type, command_id: r.commandId, payload: r.payload, at: new Date(r.at) });
  }
  if (write.status !== undefined) stored.row.status = write.status;
  if (write.vars !== undefined) stored.row.vars = write.vars;
  if (write.error !== undefined) stored.row.error = write.error;
  stored.timers = stored.timers.filter((t) => !write.timersDelete.includes(t.commandId));
  stored.timers.push(...write.timersInsert);
}

interface Harness {
  stored: Stored;
  parked: Error[];
  failures: unknown[];
  actor(seeded: boolean): WorkflowActor;
}

function harness(fn: (ctx: WorkflowContext) => Promise<unknown>): Harness {
  const now = new Date();
  const stored: Stored = {
    row: {
      id: 'w',
      name: 'generated',
      version: '1',
      status: 'pending',
      input: null,
      result: null,
      error: null,
      vars: '{}',
      start_at: now,
      created_at: now,
      started_at: null,
      completed_at: null,
    },
    history: [],
    timers: [],
  };
  const parked: Error[] = [];
  const failures: unknown[] = [];
  const host = {
    codec: new JsonCodec(1024 * 1024),
    errors: workflowErrors,
    logger: {
      debug() {},
      info() {},
      warn() {},
      error(fields: unknown) {
        failures.push(fields);
      },
    },
    observer: { parked: (_id: string, error: Error) => parked.push(error), rehydrated() {}, evicted() {} },
    wal: {
      isCongested: false,
      isClosed: false,
      enqueue(write: WorkflowWrite, onDurable?: (isRefused: boolean) => void) {
        applyWrite(stored, write);
        queueMicrotask(() => onDurable?.(false));
      },
    },
    loadWorkflow: () => Promise.resolve({ ...stored.row }),
    loadHistory: () => Promise.resolve([...stored.history]),
    workflow: () => fn,
    release() {},
    rebuild: (_id: string, unprocessed: unknown) => failures.push({ rebuild: unprocessed }),
    readInbox() {},
  } as unknown as ActorHost;
  const owner = { dropped() {}, idleWithoutWrite() {} };
  return {
    stored,
    parked,
    failures,
    actor: (seeded) => new WorkflowActor('w', host, owner, seeded ? { ...stored.row } : undefined),
  };
}

/** A message that names nothing the workflow awaits: it makes a new actor load, and writes nothing. */
const WAKE: ActorMessage = { type: 'activityRetry', commandId: 0, task: undefined as never };

function comparable(snapshot: ActorSnapshot | undefined): unknown {
  return snapshot && JSON.parse(JSON.stringify(snapshot));
}

/** Builds an actor from the stored history, as after an eviction or a restart, and lets it replay. */
async function rebuilt(h: Harness): Promise<WorkflowActor> {
  const actor = h.actor(false);
  actor.push(WAKE);
  await actor.drained();
  return actor;
}

/**
 * Runs the workflow live, each step's messages chosen from what it awaits. With `check`, before
 * every step: the stored variables and what inspect derives from the stored rows are what the
 * live actor shows, and an actor rebuilt from the history shows the same (and sometimes runs on
 * in its place).
 */
async function runLive(h: Harness, choices: number[], check: boolean): Promise<void> {
  let live = h.actor(true);
  live.push({ type: 'start' });
  await live.drained();
  let c = 0;
  let inboxId = 0;
  const choose = (n: number): number => (choices[c++] ?? 0) % n;
  while (c < choices.length) {
    const snapshot = live.snapshot();
    if (!snapshot) break;
    if (check) {
      expect(JSON.parse(h.stored.row.vars)).toEqual(snapshot.vars);
      const state = { row: h.stored.row, history: h.stored.history, tasks: [], timers: h.stored.timers, inbox: [] };
      expect(buildWorkflowState(state, undefined, 0).waitingOn).toEqual(buildWorkflowState(state, snapshot, 0).waitingOn);
      const other = await rebuilt(h);
      expect(h.parked).toEqual([]);
      expect(comparable(other.snapshot())).toEqual(comparable(snapshot));
      if (choose(2) === 0) live = other;
    }
    const out = snapshot.outstanding;
    const candidates: ActorMessage[] = [
      ...out.activities.flatMap((a): ActorMessage[] => [
        { type: 'activityCompleted', commandId: a.commandId, result: JSON.stringify({ of: a.name, n: a.commandId }), attempts: 1 },
        { type: 'activityFailed', commandId: a.commandId, failure: { name: 'FlakyError', message: 'gave up' }, attempts: 2 },
      ]),
      ...out.timers.map((t): ActorMessage => ({ type: 'timerFired', commandId: t.commandId })),
      ...EVENTS.map((name): ActorMessage => ({ type: 'event', inboxId: ++inboxId, name, payload: String(choose(8) === 0 ? 13 : c) })),
    ];
    const count = 1 + choose(3);
    for (let k = 0; k < count; k++) live.push(candidates[choose(candidates.length)]!);
    await live.drained();
  }
}

const COMMAND_TYPES = ['ActivityScheduled', 'TimerStarted', 'EventWaitStarted', 'WorkflowCompleted', 'WorkflowFailed'];

const stepsArb = fc.array(stepArb, { minLength: 1, maxLength: 10, size: 'max' });
const choicesArb = fc.array(fc.nat(), { minLength: 20, maxLength: 100, size: 'max' });

describe('WorkflowActor replay (property)', () => {
  it('rebuilds, from the history it wrote, the state a live run had, at every step', async () => {
    await fc.assert(
      fc.asyncProperty(stepsArb, choicesArb, async (steps, choices) => {
        const h = harness(workflowOf(steps, { isRecordingResults: true }));
        await runLive(h, choices, true);
        expect(h.failures).toEqual([]);
        expect(h.parked).toEqual([]);
      }),
      { numRuns: 150 },
    );
  });

  it('parks at the step of a command its history lost or recorded under another name', async () => {
    await fc.assert(
      fc.asyncProperty(stepsArb, choicesArb, fc.nat(), fc.boolean(), async (steps, choices, pick, isRemoved) => {
        const h = harness(workflowOf(steps, { isRecordingResults: true }));
        await runLive(h, choices, false);
        const commands = h.stored.history.filter((r) => COMMAND_TYPES.includes(r.type));
        const named = commands.filter((r) => r.type === 'ActivityScheduled' || r.type === 'EventWaitStarted');
        const targets = isRemoved ? commands : named;
        fc.pre(targets.length > 0);
        const row = targets[pick % targets.length]!;
        if (isRemoved) h.stored.history.splice(h.stored.history.indexOf(row), 1);
        else row.payload = row.payload!.replace(/"(activityName|eventName)":"[^"]*"/, '"$1":"renamed"');
        h.stored.row.status = 'running';
        await rebuilt(h);
        expect(h.parked).toHaveLength(1);
        expect(h.parked[0]).toMatchObject({ name: 'NonDeterminismError', activation: row.activation });
        const { expected, got } = h.parked[0] as unknown as { expected: string; got: string };
        if (isRemoved) expect(got).not.toBe('nothing');
        else expect(expected).toContain('renamed');
        expect(h.failures.filter((f) => !('rebuild' in (f as object)))).toHaveLength(1);
      }),
      { numRuns: 150 },
    );
  });
});
