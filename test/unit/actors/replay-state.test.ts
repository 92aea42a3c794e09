import { describe, expect, it, vi } from 'vitest';

import type { Command } from '../../../actors/commands.js';
import { ReplayState, type StrayCall, UnknownCommandError } from '../../../actors/replay-state.js';
import { JsonCodec } from '../../../engine/codec.js';
import {
  ActivityFailure,
  ErrorCode,
  InvalidArgumentError,
  PayloadTooLargeError,
  TimeoutError,
} from '../../../engine/errors.js';
import { workflowErrors } from '../../../engine/workflow-errors.js';
import { thrown } from '../../helpers/builders.js';

const errors = workflowErrors;

function newState(workflowId = 'wf-1'): ReplayState {
  return new ReplayState(workflowId, new JsonCodec(1024 * 1024), errors);
}

type Settled<T> = { state: 'pending' } | { state: 'ok'; value: T } | { state: 'error'; error: unknown };

/** Watches a promise so the test can inspect how it settled, without an unhandled rejection. */
function outcome<T>(promise: Promise<T>): () => Settled<T> {
  let result: Settled<T> = { state: 'pending' };
  promise.then(
    (value) => (result = { state: 'ok', value }),
    (error: unknown) => (result = { state: 'error', error }),
  );
  return () => result;
}

const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
const OPTIONS = '{}';

describe('ReplayState commands', () => {
  it('numbers commands 1, 2, 3 across kinds and hands each out once', () => {
    const rs = newState();
    void rs.scheduleActivity('charge', { amount: 10 }, OPTIONS);
    void rs.startTimer(5_000);
    void rs.waitForEvent('approve', 9_000);
    expect(rs.takeCommands()).toEqual<Command[]>([
      { kind: 'scheduleActivity', commandId: 1, name: 'charge', input: '{"amount":10}', options: OPTIONS },
      { kind: 'startTimer', commandId: 2, dueAt: 5_000 },
      { kind: 'waitEvent', commandId: 3, name: 'approve', timeoutAt: 9_000 },
    ]);
    expect(rs.takeCommands()).toEqual([]);
  });

  it('refuses a non-JSON activity input without using up a command id', () => {
    const rs = newState();
    expect(() => rs.scheduleActivity('charge', { n: 1n }, OPTIONS)).toThrow(InvalidArgumentError);
    void rs.scheduleActivity('charge', undefined, OPTIONS);
    expect(rs.takeCommands()).toEqual([
      { kind: 'scheduleActivity', commandId: 1, name: 'charge', input: undefined, options: OPTIONS },
    ]);
  });

  it('checks activity options through the codec', () => {
    const rs = newState();
    expect(JSON.parse(rs.encodeActivityOptions({ retry: { maxAttempts: Infinity } }))).toEqual({
      retry: { maxAttempts: Number.MAX_SAFE_INTEGER },
    });
    expect(() => rs.encodeActivityOptions({ startToCloseTimeoutMs: -1 })).toThrow(InvalidArgumentError);
  });

  it('resolves and rejects activities by command id', async () => {
    const rs = newState();
    const ok = outcome(rs.scheduleActivity('a', 1, OPTIONS));
    const bad = outcome(rs.scheduleActivity('b', 2, OPTIONS));
    expect(rs.isPending(1, 'activity')).toBe(true);
    expect(rs.nameOf(2)).toBe('b');
    rs.resolveActivity(1, { sum: 3 });
    rs.rejectActivity(2, 4, { name: 'PaymentError', message: 'declined', code: 'E_DECLINED' });
    await flush();
    expect(ok()).toEqual({ state: 'ok', value: { sum: 3 } });
    const failed = bad();
    expect(failed.state).toBe('error');
    const error = (failed as { error: ActivityFailure }).error;
    expect(error).toBeInstanceOf(ActivityFailure);
    expect(error.code).toBe(ErrorCode.ActivityFailure);
    expect(error.activityName).toBe('b');
    expect(error.attempts).toBe(4);
    expect(error.cause).toMatchObject({ name: 'PaymentError', message: 'declined', code: 'E_DECLINED' });
    expect(rs.isPending(1, 'activity')).toBe(false);
    expect(rs.outstanding().activities).toEqual([]);
  });

  it('throws UnknownCommandError for ids it is not waiting on, or waiting on as another kind', () => {
    const rs = newState();
    void rs.scheduleActivity('a', undefined, OPTIONS);
    void rs.startTimer(100);
    const unknown = (fn: () => void): UnknownCommandError => {
      try {
        fn();
      } catch (error) {
        expect(error).toBeInstanceOf(UnknownCommandError);
        return error as UnknownCommandError;
      }
      throw new Error('expected UnknownCommandError');
    };
    expect(unknown(() => rs.resolveActivity(7, null)).commandId).toBe(7);
    expect(unknown(() => rs.resolveActivity(2, null)).commandId).toBe(2);
    expect(unknown(() => rs.rejectActivity(9, 1, { name: 'E', message: 'm' })).commandId).toBe(9);
    expect(unknown(() => rs.fireTimer(1)).commandId).toBe(1);
    expect(unknown(() => rs.fireTimer(42)).commandId).toBe(42);
    rs.resolveActivity(1, null);
    expect(unknown(() => rs.resolveActivity(1, null)).commandId).toBe(1);
    expect(rs.nameOf(2)).toBe('');
    expect(rs.nameOf(99)).toBe('');
  });

  it('resolves a sleep when its timer fires', async () => {
    const rs = newState();
    const sleep = outcome(rs.startTimer(1_000));
    expect(rs.outstanding().timers).toEqual([{ commandId: 1, dueAt: 1_000 }]);
    expect(rs.isPending(1, 'timer')).toBe(true);
    rs.fireTimer(1);
    await flush();
    expect(sleep()).toEqual({ state: 'ok', value: undefined });
    expect(rs.outstanding()).toEqual({ activities: [], timers: [], events: [] });
  });
});

describe('ReplayState events', () => {
  it('resolves waiters of a name oldest first', async () => {
    const rs = newState();
    const first = outcome(rs.waitForEvent('e', undefined));
    const second = outcome(rs.waitForEvent('e', undefined));
    expect(rs.deliverEvent('e', 'one')).toEqual({ waiter: 1, hadTimeout: false });
    await flush();
    expect(first()).toEqual({ state: 'ok', value: 'one' });
    expect(second()).toEqual({ state: 'pending' });
    expect(rs.deliverEvent('e', 'two')).toEqual({ waiter: 2, hadTimeout: false });
    await flush();
    expect(second()).toEqual({ state: 'ok', value: 'two' });
  });

  it('gives an event to every handler of its name and to the oldest waiter', async () => {
    const rs = newState();
    const seen: string[] = [];
    rs.onEvent('e', (p) => seen.push(`h1:${String(p)}`));
    rs.onEvent('e', (p) => seen.push(`h2:${String(p)}`));
    rs.onEvent('other', (p) => seen.push(`other:${String(p)}`));
    const w1 = outcome(rs.waitForEvent('e', undefined));
    const w2 = outcome(rs.waitForEvent('e', undefined));
    expect(rs.deliverEvent('e', 'x')).toEqual({ waiter: 1, hadTimeout: false });
    await flush();
    expect(seen).toEqual(['h1:x', 'h2:x']);
    expect(w1()).toEqual({ state: 'ok', value: 'x' });
    expect(w2()).toEqual({ state: 'pending' });
  });

  it('keeps an event nobody listens to, in order, for the next waitForEvent', async () => {
    const rs = newState();
    expect(rs.deliverEvent('e', 1)).toEqual({ waiter: undefined, hadTimeout: false });
    rs.deliverEvent('e', 2);
    const a = outcome(rs.waitForEvent('e', 500));
    const b = outcome(rs.waitForEvent('e', undefined));
    await flush();
    expect(a()).toEqual({ state: 'ok', value: 1 });
    expect(b()).toEqual({ state: 'ok', value: 2 });
    // A kept event is taken without a command, so no command id is used up either.
    expect(rs.takeCommands()).toEqual([]);
    void rs.startTimer(1);
    expect(rs.takeCommands()).toEqual([{ kind: 'startTimer', commandId: 1, dueAt: 1 }]);
  });

  it('hands all kept events to the next onEvent registration only', () => {
    const rs = newState();
    rs.deliverEvent('e', 'a');
    rs.deliverEvent('e', 'b');
    const first: unknown[] = [];
    const second: unknown[] = [];
    rs.onEvent('e', (p) => first.push(p));
    rs.onEvent('e', (p) => second.push(p));
    expect(first).toEqual(['a', 'b']);
    expect(second).toEqual([]);
    void rs.waitForEvent('e', undefined);
    expect(rs.takeCommands()).toEqual([{ kind: 'waitEvent', commandId: 1, name: 'e', timeoutAt: undefined }]);
  });

  it('does not keep an event that a handler took', () => {
    const rs = newState();
    const seen: unknown[] = [];
    rs.onEvent('e', (p) => seen.push(p));
    expect(rs.deliverEvent('e', 'x')).toEqual({ waiter: undefined, hadTimeout: false });
    void rs.waitForEvent('e', undefined);
    expect(seen).toEqual(['x']);
    expect(rs.isPending(1, 'event')).toBe(true);
    expect(rs.nameOf(1)).toBe('e');
  });

  it('reports a resolved wait that had a timeout so its timer can be cancelled', () => {
    const rs = newState();
    void rs.waitForEvent('e', 2_000);
    expect(rs.outstanding()).toEqual({
      activities: [],
      timers: [{ commandId: 1, dueAt: 2_000 }],
      events: [{ commandId: 1, name: 'e', timeoutAt: 2_000 }],
    });
    expect(rs.deliverEvent('e', null)).toEqual({ waiter: 1, hadTimeout: true });
    expect(rs.outstanding()).toEqual({ activities: [], timers: [], events: [] });
  });

  it('rejects a timed-out wait with TimeoutError and routes later events past it', async () => {
    const rs = newState();
    const w1 = outcome(rs.waitForEvent('e', 100));
    const w2 = outcome(rs.waitForEvent('e', 200));
    const w3 = outcome(rs.waitForEvent('e', undefined));
    rs.fireTimer(2);
    await flush();
    const timedOut = w2();
    expect(timedOut.state).toBe('error');
    expect((timedOut as { error: unknown }).error).toBeInstanceOf(TimeoutError);
    expect((timedOut as { error: TimeoutError }).error.code).toBe(ErrorCode.Timeout);
    expect(rs.deliverEvent('e', 'first')).toEqual({ waiter: 1, hadTimeout: true });
    expect(rs.deliverEvent('e', 'second')).toEqual({ waiter: 3, hadTimeout: false });
    expect(rs.deliverEvent('e', 'third')).toEqual({ waiter: undefined, hadTimeout: false });
    await flush();
    expect(w1()).toEqual({ state: 'ok', value: 'first' });
    expect(w3()).toEqual({ state: 'ok', value: 'second' });
    expect(() => rs.fireTimer(2)).toThrow(UnknownCommandError);
  });

  it('gives a handler registered while an event is handed out the next event, not that one', () => {
    const rs = newState();
    const seen: string[] = [];
    // Registers a handler like itself at every call: were the new one handed the same event, this
    // would never end (capped here, so that the test fails rather than hangs).
    const handler = (depth: number) => (payload: unknown) => {
      seen.push(`${depth}:${String(payload)}`);
      if (seen.length < 50) rs.onEvent('e', handler(depth + 1));
    };
    rs.onEvent('e', handler(0));
    rs.deliverEvent('e', 'a');
    expect(seen).toEqual(['0:a']);
    rs.deliverEvent('e', 'b');
    expect(seen).toEqual(['0:a', '0:b', '1:b']);
  });

  it('hands kept events to a new handler as if they came now: what it starts takes the kept events after the one it handles', async () => {
    // One handler, registered before the events come or after they were kept, must see the same.
    const run = (isKeptFirst: boolean) => {
      const rs = newState();
      const seen: string[] = [];
      const waits: Promise<unknown>[] = [];
      const register = () =>
        rs.onEvent('e', (p) => {
          seen.push(`first:${String(p)}`);
          if (p !== 'a' && p !== 'b') return;
          waits.push(rs.waitForEvent('e', undefined));
          if (p === 'a') rs.onEvent('e', (q) => seen.push(`second:${String(q)}`));
        });
      if (!isKeptFirst) register();
      for (const p of ['a', 'b', 'c', 'd']) rs.deliverEvent('e', p);
      if (isKeptFirst) register();
      return { seen, waits: Promise.all(waits), commands: rs.takeCommands() };
    };
    const kept = run(true);
    const live = run(false);
    expect(live.seen).toEqual(['first:a', 'first:b', 'second:b', 'first:c', 'second:c', 'first:d', 'second:d']);
    expect(await live.waits).toEqual(['b', 'c']);
    expect(kept.seen).toEqual(live.seen);
    expect(await kept.waits).toEqual(['b', 'c']);
    // Taken from the kept events, as a wait that finds one kept takes it: no command.
    expect(kept.commands).toEqual([]);
  });

  it('starts a command for a wait a handler of kept events starts past the last of them', () => {
    const rs = newState();
    rs.deliverEvent('e', 'a');
    rs.onEvent('e', () => void rs.waitForEvent('e', undefined));
    expect(rs.takeCommands()).toEqual([{ kind: 'waitEvent', commandId: 1, name: 'e', timeoutAt: undefined }]);
    expect(rs.deliverEvent('e', 'b').waiter).toBe(1);
    // Kept events of another name are handed out the same way later.
    rs.deliverEvent('f', 'c');
    const seen: unknown[] = [];
    rs.onEvent('f', (p) => seen.push(p));
    expect(seen).toEqual(['c']);
  });

  it('fails the workflow when a handler throws', () => {
    const rs = newState();
    rs.onEvent('e', () => {
      throw new RangeError('bad payload');
    });
    rs.deliverEvent('e', 1);
    expect(rs.isTerminal).toBe(true);
    const [command] = rs.takeCommands();
    expect(command).toMatchObject({ kind: 'failWorkflow', failure: { name: 'RangeError', message: 'bad payload' } });
  });

  it('fails the workflow when a handler throws on a kept event', () => {
    const rs = newState();
    rs.deliverEvent('e', 1);
    rs.onEvent('e', () => {
      throw new Error('late');
    });
    expect(rs.isTerminal).toBe(true);
    expect(rs.takeCommands()).toMatchObject([{ kind: 'failWorkflow', failure: { message: 'late' } }]);
  });
});

describe('ReplayState variables', () => {
  it('reports variables only when they changed', () => {
    const rs = newState();
    expect(rs.takeChangedVars()).toBeUndefined();
    expect(rs.varsJson()).toBe('{}');
    rs.setVar('cycle', 1);
    rs.setVar('name "q"', { a: [1, 2] });
    expect(rs.takeChangedVars()).toBe('{"cycle":1,"name \\"q\\"":{"a":[1,2]}}');
    expect(rs.takeChangedVars()).toBeUndefined();
    rs.setVar('cycle', 1);
    expect(rs.takeChangedVars()).toBeUndefined();
    rs.setVar('cycle', 2);
    expect(JSON.parse(rs.takeChangedVars()!)).toEqual({ cycle: 2, 'name "q"': { a: [1, 2] } });
  });

  it('stores undefined as null and decodes variables for inspect', () => {
    const rs = newState();
    rs.setVar('x', undefined);
    rs.setVar('y', 'text');
    expect(rs.varsJson()).toBe('{"x":null,"y":"text"}');
    expect(rs.vars()).toEqual({ x: null, y: 'text' });
  });

  it('refuses a non-JSON variable with an error naming it', () => {
    const rs = newState();
    let caught: unknown;
    try {
      rs.setVar('counter', () => 1);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(InvalidArgumentError);
    expect((caught as Error).message).toContain('variable "counter"');
    expect(rs.takeChangedVars()).toBeUndefined();
  });

  it('refuses a variable that would take the values together over maxPayloadBytes, keeping what each held before', () => {
    const rs = new ReplayState('wf-1', new JsonCodec(100), errors);
    rs.setVar('a', 'x'.repeat(30));
    rs.setVar('b', 'y'.repeat(30));
    rs.takeChangedVars();
    // A new variable over the bound goes; a changed one gets its old value back.
    expect(() => rs.setVar('c', 'z'.repeat(40))).toThrow(PayloadTooLargeError);
    expect(() => rs.setVar('a', 'w'.repeat(70))).toThrow("the workflow variables' values together");
    expect(rs.vars()).toEqual({ a: 'x'.repeat(30), b: 'y'.repeat(30) });
    expect(rs.takeChangedVars()).toBeUndefined();
    // The bound is counted from what is kept: a change that fits still goes in.
    rs.setVar('a', 'v'.repeat(35));
    expect(rs.vars()).toEqual({ a: 'v'.repeat(35), b: 'y'.repeat(30) });
  });

  it('measures a large variable once, not again at each change of a small one beside it', () => {
    const rs = newState();
    rs.setVar('report', 'r'.repeat(400_000));
    const byteLength = vi.spyOn(Buffer, 'byteLength');
    let measured = 0;
    try {
      for (let i = 0; i < 1_000; i++) rs.setVar('progress', i);
      for (const [value] of byteLength.mock.calls) measured += String(value).length;
    } finally {
      byteLength.mockRestore();
    }
    expect(rs.vars()).toEqual({ report: 'r'.repeat(400_000), progress: 999 });
    // Measuring every value at each call reads the large one a thousand times (400 M characters).
    expect(measured).toBeLessThanOrEqual(2 * 400_002 + 1_000 * 10);
    // Counted change by change, the bound still holds: the values together stay within the limit.
    expect(() => rs.setVar('progress', 'p'.repeat(700_000))).toThrow(PayloadTooLargeError);
    expect(rs.vars()).toEqual({ report: 'r'.repeat(400_000), progress: 999 });
    rs.setVar('report', '');
    rs.setVar('progress', 'p'.repeat(700_000));
    expect(rs.vars()).toEqual({ report: '', progress: 'p'.repeat(700_000) });
    // Counted first when a variable is replaced, its old value is not counted with the new one.
    const fresh = newState();
    fresh.setVar('report', 'short');
    const refused = thrown(() => fresh.setVar('report', 'é'.repeat(600_000)));
    expect(refused).toBeInstanceOf(PayloadTooLargeError);
    expect((refused as PayloadTooLargeError).bytes).toBe(1_200_002);
    expect(fresh.vars()).toEqual({ report: 'short' });
  });
});

describe('ReplayState completion', () => {
  it('completes with the encoded result', () => {
    const rs = newState();
    rs.complete({ paid: 120 });
    expect(rs.isTerminal).toBe(true);
    expect(rs.takeCommands()).toEqual([{ kind: 'completeWorkflow', result: '{"paid":120}' }]);
  });

  it('completes with no result for undefined', () => {
    const rs = newState();
    rs.complete(undefined);
    expect(rs.takeCommands()).toEqual([{ kind: 'completeWorkflow', result: undefined }]);
  });

  it('turns a non-serialisable result into a failure', () => {
    const rs = newState();
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    rs.complete(cyclic);
    expect(rs.isTerminal).toBe(true);
    expect(rs.takeCommands()).toMatchObject([
      { kind: 'failWorkflow', failure: { name: 'InvalidArgumentError', code: ErrorCode.InvalidArgument } },
    ]);
  });

  it('fails with the plain form of the error', () => {
    const rs = newState();
    rs.fail(Object.assign(new Error('nope', { cause: new TypeError('inner') }), { code: 'E_X' }));
    expect(rs.takeCommands()).toMatchObject([
      { kind: 'failWorkflow', failure: { name: 'Error', message: 'nope', code: 'E_X', cause: { name: 'TypeError' } } },
    ]);
  });

  it('drops commands issued after the workflow ended', () => {
    const rs = newState();
    void rs.scheduleActivity('before', undefined, OPTIONS);
    rs.complete('done');
    void rs.scheduleActivity('after', undefined, OPTIONS);
    void rs.startTimer(10);
    void rs.waitForEvent('e', undefined);
    rs.fail(new Error('late'));
    rs.complete('again');
    expect(rs.takeCommands().map((c) => c.kind)).toEqual(['scheduleActivity', 'completeWorkflow']);
    expect(rs.isTerminal).toBe(true);
  });
});

describe('ReplayState between steps', () => {
  it('hands a command emitted while no step runs to onStray instead of buffering it', () => {
    const rs = newState();
    const strays: StrayCall[] = [];
    rs.onStray = (call) => strays.push(call);
    void rs.startTimer(10);
    rs.isInStep = false;
    void rs.scheduleActivity('late', undefined, OPTIONS);
    expect(strays).toEqual<StrayCall[]>([{ kind: 'scheduleActivity', commandId: 2, name: 'late', input: undefined, options: OPTIONS }]);
    expect(rs.takeCommands().map((c) => c.kind)).toEqual(['startTimer']);
    rs.isInStep = true;
    void rs.waitForEvent('e', undefined);
    expect(rs.takeCommands().map((c) => c.kind)).toEqual(['waitEvent']);
    expect(strays).toHaveLength(1);
  });

  it('hands a variable set while no step runs to onStray instead of keeping it', () => {
    const rs = newState();
    const strays: StrayCall[] = [];
    rs.onStray = (call) => strays.push(call);
    rs.setVar('early', 1);
    expect(rs.takeChangedVars()).toBe('{"early":1}');
    rs.isInStep = false;
    rs.setVar('late', 2);
    rs.setVar('early', 3);
    expect(strays).toEqual<StrayCall[]>([
      { kind: 'stateChange', method: 'setVar', name: 'late' },
      { kind: 'stateChange', method: 'setVar', name: 'early' },
    ]);
    expect(rs.takeChangedVars()).toBeUndefined();
    expect(rs.vars()).toEqual({ early: 1 });
  });

  it('hands a draw, a handler or a kept event asked for while no step runs to onStray instead of making it', async () => {
    const rs = newState();
    const strays: StrayCall[] = [];
    rs.onStray = (call) => strays.push(call);
    rs.deliverEvent('kept', 'k');
    rs.isInStep = false;
    rs.random();
    const handled: unknown[] = [];
    rs.onEvent('kept', (payload) => void handled.push(payload));
    const late = outcome(rs.waitForEvent('kept', undefined));
    await flush();
    expect(strays).toEqual<StrayCall[]>([
      { kind: 'stateChange', method: 'random', name: '' },
      { kind: 'stateChange', method: 'onEvent', name: 'kept' },
      { kind: 'stateChange', method: 'waitForEvent', name: 'kept' },
    ]);
    expect(handled).toEqual([]);
    expect(late()).toEqual({ state: 'pending' });
    rs.isInStep = true;
    expect(await rs.waitForEvent('kept', undefined)).toBe('k');
    expect(rs.takeCommands()).toEqual([]);
  });
});

describe('ReplayState random', () => {
  it('is seeded by the workflow id', () => {
    const a = newState('seed-a');
    const b = newState('seed-a');
    const c = newState('seed-b');
    const seqA = Array.from({ length: 20 }, () => a.random());
    const seqB = Array.from({ length: 20 }, () => b.random());
    const seqC = Array.from({ length: 20 }, () => c.random());
    expect(seqA).toEqual(seqB);
    expect(seqA).not.toEqual(seqC);
    for (const x of [...seqA, ...seqC]) {
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(1);
    }
  });
});
