import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import type { Command } from '../../actors/commands.js';
import { ReplayState } from '../../actors/replay-state.js';
import { WorkflowContextImpl } from '../../actors/workflow-context.js';
import { JsonCodec } from '../../engine/codec.js';
import { workflowErrors } from '../../engine/workflow-errors.js';
import { EVENTS, type Step, stepArbitrary, workflowOf } from '../helpers/step-workflows.js';

const errors = workflowErrors;
const codec = new JsonCodec(1024 * 1024);
const T0 = 1_700_000_000_000;

const stepArb = stepArbitrary({
  activity: 4,
  parallel: 2,
  sleep: 2,
  wait: 3,
  race: 2,
  countEvents: 2,
  setVar: 2,
  random: 2,
  now: 1,
  // Rare, so that most runs get far enough to exercise the rest.
  throw: 1,
});

/** An inbound message of one activation, as the actor would apply it. */
type Inbound =
  | { kind: 'completed'; commandId: number; result: unknown }
  | { kind: 'failed'; commandId: number }
  | { kind: 'fired'; commandId: number }
  | { kind: 'event'; name: string; payload: unknown };

interface Activation {
  at: number;
  inbound: Inbound[];
  commands: unknown[];
  vars: string;
  isTerminal: boolean;
}

function begin(workflowId: string, steps: Step[]): ReplayState {
  const rs = new ReplayState(workflowId, codec, errors);
  rs.now = T0;
  const ctx = new WorkflowContextImpl(rs, workflowId, 'generated', '1', T0);
  const fn = workflowOf(steps);
  new Promise<unknown>((resolve) => resolve(fn(ctx))).then(
    (result) => rs.complete(result),
    (error: unknown) => rs.fail(error),
  );
  return rs;
}

function apply(rs: ReplayState, m: Inbound): void {
  switch (m.kind) {
    case 'completed':
      return rs.resolveActivity(m.commandId, m.result);
    case 'failed':
      return rs.rejectActivity(m.commandId, 2, { name: 'FlakyError', message: 'gave up' });
    case 'fired':
      return rs.fireTimer(m.commandId);
    case 'event':
      rs.deliverEvent(m.name, m.payload);
  }
}

/** Whether the actor would apply `m` now (it drops messages for commands already settled). */
function isApplicable(rs: ReplayState, m: Inbound): boolean {
  switch (m.kind) {
    case 'completed':
    case 'failed':
      return rs.isPending(m.commandId, 'activity');
    case 'fired':
      return rs.isPending(m.commandId, 'timer') || rs.isPending(m.commandId, 'event');
    case 'event':
      return true;
  }
}

/** Stacks depend on where the run was driven from, not on the workflow: left out of the comparison. */
function comparable(commands: readonly Command[]): unknown[] {
  const withoutStacks = JSON.stringify(commands, (key, value: unknown) => (key === 'stack' ? undefined : value));
  return JSON.parse(withoutStacks) as unknown[];
}

/** Workflow code runs in promise callbacks: one turn of the event loop lets it block again. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function record(rs: ReplayState, at: number, inbound: Inbound[]): Activation {
  return { at, inbound, commands: comparable(rs.takeCommands()), vars: rs.varsJson(), isTerminal: rs.isTerminal };
}

/** Runs the workflow live, choosing each activation's inbound messages from what it waits on. */
async function runLive(workflowId: string, steps: Step[], choices: number[]): Promise<Activation[]> {
  const rs = begin(workflowId, steps);
  await settle();
  const history = [record(rs, T0, [])];
  let c = 0;
  const choose = (n: number): number => (choices[c++] ?? 0) % n;
  while (!rs.isTerminal && c < choices.length) {
    const out = rs.outstanding();
    const candidates: Inbound[] = [
      ...out.activities.flatMap((a): Inbound[] => [
        { kind: 'completed', commandId: a.commandId, result: { of: a.name, n: a.commandId } },
        { kind: 'failed', commandId: a.commandId },
      ]),
      ...out.timers.map((t): Inbound => ({ kind: 'fired', commandId: t.commandId })),
      ...EVENTS.map((name): Inbound => ({ kind: 'event', name, payload: choose(10) === 0 ? 13 : c })),
    ];
    const at = T0 + 1_000 * history.length;
    rs.now = at;
    const inbound: Inbound[] = [];
    const count = 1 + choose(3);
    for (let k = 0; k < count; k++) {
      const m = candidates[choose(candidates.length)]!;
      if (!isApplicable(rs, m)) continue;
      inbound.push(m);
      apply(rs, m);
    }
    await settle();
    history.push(record(rs, at, inbound));
  }
  return history;
}

/** Feeds the recorded inbound messages to a fresh ReplayState, activation by activation. */
async function replay(workflowId: string, steps: Step[], recorded: Activation[]): Promise<Activation[]> {
  const rs = begin(workflowId, steps);
  rs.isReplaying = true;
  await settle();
  const history = [record(rs, T0, [])];
  for (const activation of recorded.slice(1)) {
    rs.now = activation.at;
    for (const m of activation.inbound) apply(rs, m);
    await settle();
    history.push(record(rs, activation.at, activation.inbound));
  }
  return history;
}

describe('ReplayState replay (property)', () => {
  it('reproduces the commands of a run from its inbound messages', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.string({ minLength: 1, maxLength: 12 }),
        fc.array(stepArb, { minLength: 1, maxLength: 12, size: 'max' }),
        fc.array(fc.nat(), { minLength: 20, maxLength: 120, size: 'max' }),
        async (workflowId, steps, choices) => {
          const live = await runLive(workflowId, steps, choices);
          const replayed = await replay(workflowId, steps, live);
          expect(replayed).toEqual(live);
        },
      ),
      { numRuns: 200 },
    );
  });
});
