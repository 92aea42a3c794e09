/**
 * Generated workflows for the replay properties: a list of steps, the arbitraries that make one,
 * and the interpreter that turns it into workflow code. Each property picks the step kinds (and
 * their weights) its harness can drive.
 */
import fc from 'fast-check';

import type { WorkflowContext } from '../../actors/workflow-context.js';

/** The event names steps wait on and register handlers for: the harnesses send only these. */
export const EVENTS = ['x', 'y'] as const;

export type Step =
  /** Calls an activity with `input`, or with the step's index when there is none. */
  | { kind: 'activity'; name: string; input: number | undefined }
  | { kind: 'parallel'; names: string[] }
  | { kind: 'sleep'; ms: number }
  | { kind: 'wait'; event: string; timeoutMs: number | undefined }
  /** An activity against a timer. */
  | { kind: 'race'; ms: number }
  /** An event against a timer. */
  | { kind: 'raceEvent'; event: string; ms: number }
  /** An activity, an event and a timer at once. */
  | { kind: 'allMixed'; event: string }
  /** A handler that does `then` at each event. */
  | { kind: 'onEvent'; event: string; then: 'var' | 'activity' | 'wait' | 'register' | 'throw' }
  /** A handler that counts the events in a variable (and throws at a payload of 13). */
  | { kind: 'countEvents'; event: string }
  | { kind: 'setVar'; name: string; value: number }
  | { kind: 'random' }
  | { kind: 'now' }
  /** An activity whose outcome the code never awaits: a callback keeps it in a variable. */
  | { kind: 'unawaited'; name: string }
  /** Fails the workflow. */
  | { kind: 'throw' };

export type StepKind = Step['kind'];

const nameArb = fc.constantFrom('a', 'b', 'c');
const eventArb = fc.constantFrom(...EVENTS);
const msArb = fc.integer({ min: 0, max: 5_000 });

const STEP_ARBS: { [K in StepKind]: fc.Arbitrary<Extract<Step, { kind: K }>> } = {
  activity: fc.record({
    kind: fc.constant('activity'),
    name: nameArb,
    input: fc.option(fc.nat(9), { nil: undefined, freq: 2 }),
  }),
  parallel: fc.record({
    kind: fc.constant('parallel'),
    names: fc.array(nameArb, { minLength: 1, maxLength: 3 }),
  }),
  sleep: fc.record({ kind: fc.constant('sleep'), ms: msArb }),
  wait: fc.record({
    kind: fc.constant('wait'),
    event: eventArb,
    timeoutMs: fc.option(msArb, { nil: undefined }),
  }),
  race: fc.record({ kind: fc.constant('race'), ms: msArb }),
  raceEvent: fc.record({ kind: fc.constant('raceEvent'), event: eventArb, ms: msArb }),
  allMixed: fc.record({ kind: fc.constant('allMixed'), event: eventArb }),
  onEvent: fc.record({
    kind: fc.constant('onEvent'),
    event: eventArb,
    then: fc.constantFrom('var', 'activity', 'wait', 'register', 'throw'),
  }),
  countEvents: fc.record({ kind: fc.constant('countEvents'), event: eventArb }),
  setVar: fc.record({ kind: fc.constant('setVar'), name: fc.constantFrom('v1', 'v2'), value: fc.integer() }),
  random: fc.constant({ kind: 'random' }),
  now: fc.constant({ kind: 'now' }),
  unawaited: fc.record({ kind: fc.constant('unawaited'), name: nameArb }),
  throw: fc.constant({ kind: 'throw' }),
};

/** Steps of the kinds in `weights`, each drawn as often as its weight says. */
export function stepArbitrary(weights: Partial<Record<StepKind, number>>): fc.Arbitrary<Step> {
  const kinds = Object.keys(weights) as StepKind[];
  const arbitraries = kinds.map((kind) => ({ weight: weights[kind]!, arbitrary: STEP_ARBS[kind] as fc.Arbitrary<Step> }));
  return fc.oneof(...arbitraries);
}

type Stubs = Record<string, (input: unknown) => Promise<unknown>>;

export interface WorkflowOfOptions {
  /** Keeps the results so far in the variable `results` after each step, so state shows them. */
  isRecordingResults?: boolean;
}

/** A workflow that runs `steps` in order, keeping what each returned or threw. */
export function workflowOf(steps: Step[], options: WorkflowOfOptions = {}) {
  return async (ctx: WorkflowContext): Promise<unknown[]> => {
    const acts = ctx.activities<Stubs>({ retry: { maxAttempts: 2 } });
    const results: unknown[] = [];
    let handled = 0;
    for (const [i, step] of steps.entries()) {
      try {
        switch (step.kind) {
          case 'activity':
            results.push(await acts[step.name]!(step.input ?? i));
            break;
          case 'parallel':
            results.push(await Promise.all(step.names.map((n, k) => acts[n]!(k))));
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
          case 'raceEvent':
            results.push(await Promise.race([ctx.waitForEvent(step.event), ctx.sleep(step.ms).then(() => 'timer')]));
            break;
          case 'allMixed':
            results.push(await Promise.all([acts.m!(i), ctx.waitForEvent(step.event), ctx.sleep(1)]));
            break;
          case 'onEvent':
            ctx.onEvent(step.event, async (payload) => {
              handled++;
              switch (step.then) {
                case 'var':
                  ctx.setVar(`seen-${step.event}`, [handled, payload]);
                  break;
                case 'activity':
                  ctx.setVar(`handled-${i}`, await acts.h!(payload));
                  break;
                case 'wait':
                  ctx.setVar(`after-${i}`, await ctx.waitForEvent(step.event === 'x' ? 'y' : 'x'));
                  break;
                case 'register':
                  if (handled < 5) ctx.onEvent(step.event, (later) => ctx.setVar(`registered-${i}-${handled}`, later));
                  break;
                case 'throw':
                  if (payload === 13) throw new RangeError('unlucky payload');
              }
            });
            break;
          case 'countEvents':
            ctx.onEvent(step.event, (payload) => {
              // A payload of 13 makes the handler throw, which fails the workflow.
              if (payload === 13) throw new RangeError('unlucky payload');
              ctx.setVar(`seen-${step.event}`, ++handled);
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
          case 'unawaited':
            void acts[step.name]!(i).then(
              (value) => ctx.setVar(`late-${i}`, value),
              () => ctx.setVar(`late-${i}`, 'failed'),
            );
            break;
          case 'throw':
            throw new Error('planned failure');
        }
      } catch (error) {
        if (step.kind === 'throw') throw error;
        results.push((error as Error).name);
      }
      if (options.isRecordingResults) ctx.setVar('results', results);
    }
    return results;
  };
}
