import { describe, expect, it, vi } from 'vitest';

import { Mailbox } from '../../../actors/mailbox.js';

/** A promise the test settles by hand, so a handler can be held "running" for as long as needed. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (error: unknown) => void } {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A mailbox whose handler records each batch and then waits for the test to release it. */
function gatedMailbox() {
  const batches: (readonly string[])[] = [];
  const gates: ReturnType<typeof deferred<void>>[] = [];
  const errors: unknown[] = [];
  let active = 0;
  let maxActive = 0;
  const mailbox = new Mailbox<string>(
    async (batch) => {
      active++;
      maxActive = Math.max(maxActive, active);
      batches.push(batch);
      const gate = deferred();
      gates.push(gate);
      try {
        await gate.promise;
      } finally {
        active--;
      }
    },
    (error) => errors.push(error),
  );
  return {
    mailbox,
    batches,
    errors,
    get maxActive() {
      return maxActive;
    },
    /** Lets the handler of the `index`-th batch finish. */
    release(index: number, error?: unknown) {
      const gate = gates[index]!;
      if (error === undefined) gate.resolve();
      else gate.reject(error);
    },
  };
}

describe('Mailbox', () => {
  it('is idle and empty before anything is pushed', async () => {
    const { mailbox } = gatedMailbox();
    expect(mailbox.isIdle).toBe(true);
    expect(mailbox.depth).toBe(0);
    await mailbox.drained();
  });

  it('takes everything pushed in one synchronous run as one batch, never inside push()', async () => {
    const box = gatedMailbox();
    box.mailbox.push('a');
    box.mailbox.push('b');
    // The handler stays off the pusher's stack.
    expect(box.batches).toEqual([]);
    await settle();
    expect(box.batches).toEqual([['a', 'b']]);
    box.release(0);
    await box.mailbox.drained();
  });

  it('hands messages pushed while a batch runs to the next run, all together', async () => {
    const box = gatedMailbox();
    box.mailbox.push('a');
    await settle();
    expect(box.batches).toEqual([['a']]);
    box.mailbox.push('b');
    box.mailbox.push('c');
    box.mailbox.push('d');
    expect(box.batches).toHaveLength(1);

    box.release(0);
    await settle();
    expect(box.batches[1]).toEqual(['b', 'c', 'd']);
    box.release(1);
    await box.mailbox.drained();
    expect(box.batches).toEqual([['a'], ['b', 'c', 'd']]);
    expect(box.maxActive).toBe(1);
    expect(box.mailbox.isIdle).toBe(true);
  });

  it('never runs its handler concurrently with itself', async () => {
    const box = gatedMailbox();
    for (let round = 0; round < 6; round++) {
      box.mailbox.push(`m${round}`);
      box.mailbox.push(`n${round}`);
      await settle();
      if (round % 2 === 1) {
        box.release(box.batches.length - 1);
        await settle();
      }
    }
    while (!box.mailbox.isIdle) {
      box.release(box.batches.length - 1);
      await settle();
    }
    expect(box.maxActive).toBe(1);
    expect(box.batches.flat()).toEqual(['m0', 'n0', 'm1', 'n1', 'm2', 'n2', 'm3', 'n3', 'm4', 'n4', 'm5', 'n5']);
  });

  it('counts in depth both the waiting messages and the batch being handled', async () => {
    const box = gatedMailbox();
    box.mailbox.push('a');
    expect(box.mailbox.depth).toBe(1);
    expect(box.mailbox.isIdle).toBe(false);
    await settle();
    expect(box.mailbox.depth).toBe(1);
    box.mailbox.push('b');
    box.mailbox.push('c');
    expect(box.mailbox.depth).toBe(3);
    box.release(0);
    await settle();
    expect(box.batches).toEqual([['a'], ['b', 'c']]);
    expect(box.mailbox.depth).toBe(2);
    expect(box.mailbox.isIdle).toBe(false);
    box.release(1);
    await box.mailbox.drained();
    expect(box.mailbox.depth).toBe(0);
    expect(box.mailbox.isIdle).toBe(true);
  });

  it('passes a handler error to onError and keeps serving later messages', async () => {
    const box = gatedMailbox();
    const boom = new Error('boom');
    box.mailbox.push('a');
    await settle();
    box.mailbox.push('b');
    box.release(0, boom);
    await settle();
    expect(box.errors).toEqual([boom]);
    box.release(1);
    await box.mailbox.drained();
    expect(box.batches).toEqual([['a'], ['b']]);
    expect(box.mailbox.isIdle).toBe(true);
  });

  it('keeps running when onError itself throws', async () => {
    const batches: (readonly string[])[] = [];
    const mailbox = new Mailbox<string>(
      async (batch) => {
        batches.push(batch);
        throw new Error(`handler ${batch.join()}`);
      },
      () => {
        throw new Error('onError failed too');
      },
    );
    mailbox.push('a');
    mailbox.push('b');
    await mailbox.drained();
    mailbox.push('c');
    await mailbox.drained();
    expect(batches).toEqual([['a', 'b'], ['c']]);
    expect(mailbox.isIdle).toBe(true);
  });

  it('kill() drops queued messages and ignores later pushes', async () => {
    const box = gatedMailbox();
    box.mailbox.push('a');
    await settle();
    box.mailbox.push('b');
    box.mailbox.push('c');
    // What was queued goes back to the caller (an actor hands it on).
    expect(box.mailbox.kill()).toEqual(['b', 'c']);
    // Only the batch already handed over is left, and it still finishes.
    expect(box.mailbox.depth).toBe(1);
    box.mailbox.push('d');
    expect(box.mailbox.depth).toBe(1);
    box.release(0);
    await box.mailbox.drained();
    expect(box.batches).toEqual([['a']]);
    expect(box.mailbox.depth).toBe(0);
    expect(box.mailbox.isIdle).toBe(true);
  });

  it('kill() before a queued run starts turns that run into a no-op', async () => {
    const box = gatedMailbox();
    box.mailbox.push('a');
    await settle();
    box.mailbox.push('b');
    box.mailbox.kill();
    box.release(0);
    await box.mailbox.drained();
    expect(box.batches).toEqual([['a']]);
    const fresh = gatedMailbox();
    fresh.mailbox.push('x');
    fresh.mailbox.kill();
    await fresh.mailbox.drained();
    expect(fresh.batches).toEqual([]);
  });

  it('gives each batch the time its first message arrived', async () => {
    await onHandMovedClock(async (setNow) => {
      const box = timedMailbox();
      box.mailbox.push('a');
      await settle();
      setNow(2000);
      box.mailbox.push('b');
      setNow(3000);
      box.mailbox.push('c');
      setNow(4000);
      box.release();
      await box.mailbox.drained();
      expect(box.batches).toEqual([['a'], ['b', 'c']]);
      // 'b' opened the second batch; 'c' joining it must not move its time.
      expect(box.received).toEqual([1000, 2000]);
    });
  });

  it('pushFirst() schedules one run for what it puts ahead, on an idle mailbox', async () => {
    const box = gatedMailbox();
    box.mailbox.pushFirst([]);
    expect(box.mailbox.isIdle).toBe(true);
    box.mailbox.pushFirst(['h1', 'h2']);
    box.mailbox.push('x');
    await settle();
    expect(box.batches).toEqual([['h1', 'h2', 'x']]);
    box.release(0);
    await box.mailbox.drained();
    expect(box.batches).toHaveLength(1);
  });

  it('pushFirst() puts messages ahead of those waiting behind a running batch, in one next run', async () => {
    const box = gatedMailbox();
    box.mailbox.push('a');
    await settle();
    box.mailbox.push('w1');
    box.mailbox.pushFirst(['h1']);
    box.mailbox.push('w2');
    expect(box.mailbox.depth).toBe(4);
    box.release(0);
    await settle();
    expect(box.batches).toEqual([['a'], ['h1', 'w1', 'w2']]);
    box.release(1);
    await box.mailbox.drained();
    expect(box.batches).toHaveLength(2);
  });

  it('pushFirst() keeps the arrival time of the messages already waiting', async () => {
    await onHandMovedClock(async (setNow) => {
      const box = timedMailbox();
      box.mailbox.push('a');
      await settle();
      setNow(2000);
      box.mailbox.push('waiting');
      setNow(3000);
      box.mailbox.pushFirst(['held']);
      box.release();
      await box.mailbox.drained();
      expect(box.batches).toEqual([['a'], ['held', 'waiting']]);
      expect(box.received).toEqual([1000, 2000]);
    });
  });

  it('calls onIdle when a run leaves nothing queued, not while more waits, and not once killed', async () => {
    const handled: string[][] = [];
    let idleAfter: number[] = [];
    const gate = deferred();
    const mailbox = new Mailbox<string>(
      async (batch) => {
        handled.push([...batch]);
        if (handled.length === 1) await gate.promise;
      },
      () => undefined,
      () => idleAfter.push(handled.length),
    );
    mailbox.push('a');
    await settle();
    mailbox.push('b');
    gate.resolve();
    await settle();
    // The first run left 'b' waiting: only the second one ran the mailbox dry.
    expect(handled).toEqual([['a'], ['b']]);
    expect(idleAfter).toEqual([2]);

    idleAfter = [];
    mailbox.push('c');
    mailbox.kill();
    await settle();
    expect(idleAfter).toEqual([]);
  });

  it('pushFirst() on a killed mailbox does nothing', async () => {
    const box = gatedMailbox();
    box.mailbox.kill();
    box.mailbox.pushFirst(['h']);
    await settle();
    expect(box.batches).toEqual([]);
    expect(box.mailbox.isIdle).toBe(true);
  });
});

/** Runs `test` with performance.now() on a clock starting at 1000 that only `setNow` moves. */
async function onHandMovedClock(test: (setNow: (ms: number) => void) => Promise<void>): Promise<void> {
  let now = 1000;
  const clock = vi.spyOn(performance, 'now').mockImplementation(() => now);
  try {
    await test((ms) => {
      now = ms;
    });
  } finally {
    clock.mockRestore();
  }
}

/** A mailbox recording each batch and the time it got; every run waits for `release()`. */
function timedMailbox() {
  const batches: (readonly string[])[] = [];
  const received: number[] = [];
  const gate = deferred();
  const mailbox = new Mailbox<string>(
    async (batch, receivedAt) => {
      batches.push(batch);
      received.push(receivedAt);
      await gate.promise;
    },
    () => undefined,
  );
  return { mailbox, batches, received, release: () => gate.resolve() };
}

/** One turn of the event loop: every promise callback the mailbox chained has run by then. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
