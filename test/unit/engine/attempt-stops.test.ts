import { describe, expect, it } from 'vitest';

import type { ActivityContext } from '../../../engine/activity-context.js';
import { type ActivityFunction, AttemptStops, runAttempt } from '../../../engine/activity-runner.js';
import { JsonCodec } from '../../../engine/codec.js';
import { NameTakenOverError } from '../../../engine/errors.js';

const codec = new JsonCodec(1 << 20);
const never = new AbortController().signal;

function attempt(id: number): { id: number; name: string; workflowId: string; activityId: string; attempt: number; timeoutMs: undefined } {
  return { id, name: 'a', workflowId: 'w', activityId: `w/${id}`, attempt: 1, timeoutMs: undefined };
}

describe('AttemptStops', () => {
  it('keeps an attempt told to stop before it began from running at all', async () => {
    const stops = new AttemptStops();
    stops.stop(1, new NameTakenOverError('orders'));
    let calls = 0;
    const fn = (() => calls++) as ActivityFunction;
    const outcome = await runAttempt(fn, attempt(1), undefined, never, codec, stops);
    expect(calls).toBe(0);
    expect(outcome).toMatchObject({ ok: false, failure: { name: 'NameTakenOverError', code: 'DURAFLOW_NAME_TAKEN_OVER' } });
    // The stop was used up: the id runs if it comes again.
    expect(await runAttempt((() => 'ran') as ActivityFunction, attempt(1), undefined, never, codec, stops)).toMatchObject({ ok: true });
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
      runAttempt(readsLater, attempt(3), undefined, never, codec, stops),
    ];
    await new Promise<void>((resolve) => setImmediate(resolve));
    stops.stop(1, new NameTakenOverError('orders'));
    stops.stop(2, new NameTakenOverError('orders'));
    release();
    await Promise.all(running);
    expect(reasons).toEqual([expect.any(NameTakenOverError), expect.any(NameTakenOverError), undefined]);
  });

  it('forgets the oldest stops it could not apply beyond a bound', () => {
    const stops = new AttemptStops();
    for (let id = 0; id < 5_000; id++) stops.stop(id, 'gone');
    expect(stops.reasonFor(0)).toBeUndefined();
    expect(stops.reasonFor(4_999)).toBe('gone');
  });
});
