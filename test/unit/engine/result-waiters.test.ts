import { describe, expect, it } from 'vitest';

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
});
