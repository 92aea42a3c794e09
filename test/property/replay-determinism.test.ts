import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import type { Command } from '../../actors/commands.js';
import { ReplayState } from '../../actors/replay-state.js';
import { type WorkflowContext, WorkflowContextImpl } from '../../actors/workflow-context.js';
import { JsonCodec } from '../../engine/codec.js';
import { workflowErrors } from '../../engine/workflow-errors.js';

const errors = workflowErrors;
const codec = new JsonCodec(1024 * 1024);
const T0 = 1_700_000_000_000;
const EVENTS = ['x', 'y'] as const;

type Step =
  | { kind: 'activity'; name: string; input: number }
  | { kind: 'parallel'; names: string[] }
  | { kind: 'sleep'; ms: number }
  | { kind: 'wait'; event: string; timeoutMs: number | undefined }
  | { kind: 'race'; ms: number }
  | { kind: 'onEvent'; event: string }
  | { kind: 'setVar'; name: string; value: number }
  | { kind: 'random' }
  | { kind: 'now' }
  | { kind: 'throw' };

const nameArb = fc.constantFrom('a', 'b', 'c');
const eventArb = fc.constantFrom(...EVENTS);
const msArb = fc.integer({ min: 0, max: 5_000 });
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('activity' as const), name: nameArb, input: fc.nat(9) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('parallel' as const),
      names: fc.array(nameArb, { minLength: 1, maxLength: 3 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('sleep' as const), ms: msArb }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('wait' as const),
      event: eventArb,
      timeoutMs: fc.option(msArb, { nil: undefined }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('race' as const), ms: msArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('onEvent' as const), event: eventArb }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('setVar' as const), name: fc.constantFrom('v1', 'v2'), value: fc.integer() }),
  },
  { weight: 2, arbitrary: fc.constant<Step>({ kind: 'random' }) },
  { weight: 1, arbitrary: fc.constant<Step>({ kind: 'now' }) },
  // Rare, so that most runs get far enough to exercise the rest.
  { weight: 1, arbitrary: fc.constant<Step>({ kind: 'throw' }) },
);

type Stubs = Record<string, (input: unknown) => Promise<unknown>>;

/** A workflow that runs `steps` in order, recording what each returned or threw. */
function workflowOf(steps: Step[]) {
  return async (ctx: WorkflowContext): Promise<unknown[]> => {
    const acts = ctx.activities<Stubs>({ retry: { maxAttempts: 2 } });
    const results: unknown[] = [];
    let seen = 0;
    for (const step of steps) {
      try {
        switch (step.kind) {
          case 'activity':
            results.push(await acts[step.name]!(step.input));
            break;
          case 'parallel':
            results.push(await Promise.all(step.names.map((n, i) => acts[n]!(i))));
            break;
          case 'sleep':
            await ctx.sleep(step.ms);
            results.push('slept');
            break;
          case 'wait':
            results.push(await ctx.waitForEvent(step.event, { timeoutMs: step.timeoutMs }));
            break;
          case 'race':
            results.push(await Promise.race([acts.r!(step.ms), ctx.sleep(step.ms).then(() => 'timer')]));
            break;
          case 'onEvent':
            ctx.onEvent(step.event, (payload) => {
              // A payload of 13 makes the handler throw, which fails the workflow.
              if (payload === 13) throw new RangeError('unlucky payload');
              ctx.setVar(`seen-${step.event}`, ++seen);
            });
            break;
          case 'setVar':
            ctx.setVar(step.name, step.value);
            break;
          case 'random':
            results.push(ctx.random() < 0.5 ? await acts.heads!(null) : await ctx.sleep(1));
            break;
          case 'now':
            ctx.setVar('now', ctx.now().getTime());
            break;
          case 'throw':
            throw new Error('planned failure');
        }
      } catch (error) {
        if (step.kind === 'throw') throw error;
        results.push((error as Error).name);
      }
    }
    return results;
  };
}

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
