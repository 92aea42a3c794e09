import { describe, expect, it, vi } from 'vitest';

import { TimeoutError } from '../../../engine/errors.js';

import { ResultWaiters } from '../../../engine/result-waiters.js';

const ended = { status: 'completed' as const, result: '1', error: null };

describe('ResultWaiters', () => {
  it('lists for re-reading only the workflows no wait expects this process to settle', async () => {
    const waiters = new ResultWaiters();
    const local = waiters.wait('here', undefined, true);
    const remote = waiters.wait('there', undefined);
    const both = [waiters.wait('mixed', undefined, true), waiters.wait('mixed', undefined)];
    expect(waiters.idsElsewhere().sort()).toEqual(['mixed', 'there']);
    both[1]!.cancel();
    expect(waiters.idsElsewhere()).toEqual(['there']);
    waiters.settle('there', ended);
    expect(await remote.promise).toEqual(ended);
    expect(waiters.idsElsewhere()).toEqual([]);
    waiters.settle('here', ended);
    expect(await local.promise).toEqual(ended);
    expect(waiters.size).toBe(1);
  });

  it('counts callers, however many wait on one workflow', async () => {
    const waiters = new ResultWaiters();
    const three = [waiters.wait('w', undefined), waiters.wait('w', undefined), waiters.wait('w', undefined, true)];
    const other = waiters.wait('v', undefined);
    expect(waiters.size).toBe(4);
    three[0]!.cancel();
    three[0]!.cancel();
    expect(waiters.size).toBe(3);
    waiters.settle('w', ended);
    expect(waiters.size).toBe(1);
    waiters.rejectAll(new Error('closed'));
    await expect(other.promise).rejects.toThrow('closed');
    expect(waiters.size).toBe(0);
  });

  it('lets a late cancel of a settled wait leave newer waits on the same id alone', async () => {
    const waiters = new ResultWaiters();
    const first = waiters.wait('w', undefined);
    waiters.settle('w', ended);
    await first.promise;
    const second = waiters.wait('w', undefined);
    first.cancel();
    expect(waiters.idsElsewhere()).toEqual(['w']);
    waiters.settle('w', ended);
    expect(await second.promise).toEqual(ended);
  });

  it('times out after timeouts longer than a timer keeps (2^31-1 ms), and never for Infinity', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    try {
      const waiters = new ResultWaiters();
      const days = 24 * 3600 * 1000;
      const month = waiters.wait('month', 30 * days);
      const forever = waiters.wait('forever', Infinity);
      const outcomes: Record<string, string> = {};
      for (const [id, wait] of Object.entries({ month, forever })) {
        wait.promise.then(
          () => (outcomes[id] = 'ended'),
          (error: unknown) => (outcomes[id] = error instanceof TimeoutError ? 'timed out' : String(error)),
        );
      }
      await vi.advanceTimersByTimeAsync(29 * days);
      expect(outcomes).toEqual({});
      await vi.advanceTimersByTimeAsync(2 * days);
      expect(outcomes).toEqual({ month: 'timed out' });
      await vi.advanceTimersByTimeAsync(365 * days);
      expect(outcomes).toEqual({ month: 'timed out' });
      waiters.settle('forever', ended);
      await vi.advanceTimersByTimeAsync(0);
      expect(outcomes).toEqual({ month: 'timed out', forever: 'ended' });
    } finally {
      vi.useRealTimers();
    }
  });
});
