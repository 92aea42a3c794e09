import { getEventListeners } from 'node:events';

import { describe, expect, it } from 'vitest';

import type { ActivityContext } from '../../../engine/activity-context.js';
import { type ActivityFunction, AttemptStops, runAttempt } from '../../../engine/activity-runner.js';
import { JsonCodec } from '../../../engine/codec.js';

const codec = new JsonCodec(1 << 20);

function task(id = 1) {
  return { id, group: 'g', name: 'charge', workflowId: 'w', activityId: `w/${id}`, attempt: 2, timeoutMs: undefined };
}

describe('runAttempt', () => {
  it('gives the activity a context with only its documented members', async () => {
    let seen: ActivityContext | undefined;
    const outcome = await runAttempt(
      ((_input: never, ctx: ActivityContext) => {
        seen = ctx;
        return 'ok';
      }) as ActivityFunction,
      task(),
      undefined,
      new AbortController().signal,
      codec,
    );
    expect(outcome).toMatchObject({ ok: true, result: '"ok"' });
    expect({ ...seen }).toEqual({ workflowId: 'w', activityId: 'w/1', activityName: 'charge', attempt: 2 });
    expect(seen!.signal).toBeInstanceOf(AbortSignal);
    expect(typeof seen!.retryAfter).toBe('function');
    expect(typeof seen!.retryAt).toBe('function');
  });

  it('turns a synchronous throw into a failure that keeps the retry time asked for before it', async () => {
    const before = Date.now();
    const outcome = await runAttempt(
      ((_input: never, ctx: ActivityContext) => {
        ctx.retryAfter(60_000);
        throw new Error('card declined');
      }) as ActivityFunction,
      task(),
      undefined,
      new AbortController().signal,
      codec,
    );
    expect(outcome).toMatchObject({ ok: false, failure: { message: 'card declined' } });
    expect(outcome.ok === false && outcome.retryAt).toBeGreaterThanOrEqual(before + 60_000);
  });

  it('lets the activity take its retry functions and signal apart from the context', async () => {
    const closing = new AbortController();
    const before = Date.now();
    let signal: AbortSignal | undefined;
    const outcome = await runAttempt(
      ((_input: never, { retryAt, retryAfter, signal: taken }: ActivityContext) => {
        signal = taken;
        retryAfter(1_000);
        retryAt(before + 120_000);
        throw new Error('try later');
      }) as ActivityFunction,
      task(),
      undefined,
      closing.signal,
      codec,
    );
    expect(outcome).toMatchObject({ ok: false, retryAt: before + 120_000 });
    closing.abort(new Error('closing'));
    expect(signal!.aborted).toBe(false); // the attempt is over: its signal no longer follows the close
  });

  it('aborts a signal read during the attempt at close, and unhooks it from the close when the attempt ends', async () => {
    const closing = new AbortController();
    const stops = new AttemptStops();
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let signal: AbortSignal | undefined;
    let read!: () => void;
    const hasRead = new Promise<void>((resolve) => (read = resolve));
    const running = runAttempt(
      (async (_input: never, ctx: ActivityContext) => {
        signal = ctx.signal;
        read();
        await released;
      }) as ActivityFunction,
      task(),
      undefined,
      closing.signal,
      codec,
      stops,
    );
    await hasRead;
    expect(getEventListeners(closing.signal, 'abort')).toHaveLength(1);
    release();
    await running;
    expect(getEventListeners(closing.signal, 'abort')).toHaveLength(0);
    expect(signal!.aborted).toBe(false);

    // Read while the engine is closing: aborted at once, with the close's reason.
    closing.abort(new Error('closing'));
    let reason: unknown;
    await runAttempt(
      ((_input: never, ctx: ActivityContext) => {
        reason = ctx.signal.reason;
      }) as ActivityFunction,
      task(2),
      undefined,
      closing.signal,
      codec,
      stops,
    );
    expect(reason).toMatchObject({ message: 'closing' });
  });
});
