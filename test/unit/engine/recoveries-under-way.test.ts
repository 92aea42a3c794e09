import { describe, expect, it } from 'vitest';

import { RecoveriesUnderWay } from '../../../engine/recoveries-under-way.js';

/** A recovery that ends when told to. */
function heldRecovery(): { recovery: Promise<void>; end(): void; fail(): void } {
  let end!: () => void;
  let fail!: () => void;
  const recovery = new Promise<void>((resolve, reject) => {
    end = resolve;
    fail = () => reject(new Error('recovery failed'));
  });
  return { recovery, end, fail };
}

describe('RecoveriesUnderWay', () => {
  it('covers the workflows of its ids only, of its names whole, or of every name', async () => {
    const recoveries = new RecoveriesUnderWay();
    const byId = heldRecovery();
    const byName = heldRecovery();
    const everything = heldRecovery();
    const settled = [recoveries.add(byId.recovery, { workflowIds: ['w1'] }), recoveries.add(byName.recovery, { names: ['a'] })];
    expect(recoveries.covers('b', 'w1')).toBe(true);
    expect(recoveries.covers('b', 'w2')).toBe(false);
    expect(recoveries.coversName('b')).toBe(false);
    expect(recoveries.covers('a', 'w2')).toBe(true);
    expect(recoveries.coversName('a')).toBe(true);
    settled.push(recoveries.add(everything.recovery, {}));
    expect(recoveries.covers('c', 'w3')).toBe(true);
    expect(recoveries.size).toBe(3);
    everything.end();
    byName.end();
    byId.end();
    await Promise.all(settled);
    expect(recoveries.size).toBe(0);
    expect(recoveries.covers('a', 'w1')).toBe(false);
  });

  it('counts overlapping recoveries, so one that ends leaves the other covering', async () => {
    const recoveries = new RecoveriesUnderWay();
    const first = heldRecovery();
    const second = heldRecovery();
    const firstSettled = recoveries.add(first.recovery, { workflowIds: ['w1'] });
    const secondSettled = recoveries.add(second.recovery, { workflowIds: ['w1', 'w2'] });
    first.end();
    await firstSettled;
    expect(recoveries.covers('a', 'w1')).toBe(true);
    second.end();
    await secondSettled;
    expect(recoveries.covers('a', 'w1')).toBe(false);
    expect(recoveries.covers('a', 'w2')).toBe(false);
  });

  it('stops counting a failed recovery before its caller hears of the failure, and settles without rejecting', async () => {
    const recoveries = new RecoveriesUnderWay();
    const failing = heldRecovery();
    const settled = recoveries.add(failing.recovery, { names: ['a'] });
    const allSettled = recoveries.settled();
    failing.fail();
    await expect(failing.recovery.catch(() => recoveries.coversName('a'))).resolves.toBe(false);
    await expect(settled).resolves.toBeUndefined();
    await expect(allSettled).resolves.toBeUndefined();
  });
});
