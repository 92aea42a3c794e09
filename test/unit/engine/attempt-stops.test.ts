import { describe, expect, it } from 'vitest';

import type { ActivityContext } from '../../../engine/activity-context.js';
import { type ActivityFunction, AttemptStops, runAttempt } from '../../../engine/activity-runner.js';
import { JsonCodec } from '../../../engine/codec.js';
import { NameTakenOverError } from '../../../engine/errors.js';

const codec = new JsonCodec(1 << 20);
const never = new AbortController().signal;

function attempt(id: number, group = 'g') {
  return { id, group, name: 'a', workflowId: 'w', activityId: `w/${id}`, attempt: 1, timeoutMs: undefined };
}

describe('AttemptStops', () => {
  it('keeps an attempt of a stopped name, made before the stop, from running at all', async () => {
    const stops = new AttemptStops();
    stops.stop('g', 1, new NameTakenOverError('orders'));
    let calls = 0;
    const fn = (() => calls++) as ActivityFunction;
    const outcome = await runAttempt(fn, attempt(1), undefined, never, codec, stops);
    expect(calls).toBe(0);
    expect(outcome).toMatchObject({ ok: false, failure: { name: 'NameTakenOverError', code: 'DURAFLOW_NAME_TAKEN_OVER' } });
    // Later attempts of the name (taken back since), and attempts of other names, run.
    expect(await runAttempt((() => 'ran') as ActivityFunction, attempt(2), undefined, never, codec, stops)).toMatchObject({ ok: true });
    expect(await runAttempt((() => 'ran') as ActivityFunction, attempt(1, 'h'), undefined, never, codec, stops)).toMatchObject({ ok: true });
  });

  it('aborts the signal of a running attempt, whether it read its signal before the stop or after', async () => {
    const stops = new AttemptStops();
    const reasons: unknown[] = [];
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const readsFirst = (async (_input: never, ctx: ActivityContext) => {
      const { signal } = ctx;
      await released;
      reasons.push(signal.reason);
    }) as ActivityFunction;
    const readsLater = (async (_input: never, ctx: ActivityContext) => {
      await released;
      reasons.push(ctx.signal.reason);
    }) as ActivityFunction;
    const running = [
      runAttempt(readsFirst, attempt(1), undefined, never, codec, stops),
      runAttempt(readsLater, attempt(2), undefined, never, codec, stops),
      runAttempt(readsLater, attempt(3, 'h'), undefined, never, codec, stops),
    ];
    await new Promise<void>((resolve) => setImmediate(resolve));
    stops.stop('g', 2, new NameTakenOverError('orders'));
    release();
    await Promise.all(running);
    expect(reasons).toEqual([expect.any(NameTakenOverError), expect.any(NameTakenOverError), undefined]);
  });

  it('stops however many attempts a name has, keeping one entry per name', () => {
    const stops = new AttemptStops();
    stops.stop('g', 100_000, 'gone');
    expect(stops.reasonFor(1, 'g')).toBe('gone');
    expect(stops.reasonFor(100_000, 'g')).toBe('gone');
    expect(stops.reasonFor(100_001, 'g')).toBeUndefined();
    // An older stop of the name does not narrow a newer one.
    stops.stop('g', 10, 'older');
    expect(stops.reasonFor(50_000, 'g')).toBe('gone');
  });
});
