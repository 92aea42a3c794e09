import { describe, expect, it } from 'vitest';

import { PendingCommands } from '../../../actors/pending-commands.js';

describe('PendingCommands', () => {
  it('finds, replaces and removes entries whether they sit in the fields or the map', () => {
    const pending = new PendingCommands<string>();
    pending.set(1, 'a');
    pending.set(2, 'b');
    pending.set(3, 'c');
    expect([pending.get(1), pending.get(2), pending.get(3), pending.get(4)]).toEqual(['a', 'b', 'c', undefined]);
    pending.set(2, 'B');
    pending.delete(1);
    expect(pending.get(1)).toBeUndefined();
    // The freed fields take the next one; the others stay where they are.
    pending.set(4, 'd');
    expect(pending.entries()).toEqual([
      [2, 'B'],
      [3, 'c'],
      [4, 'd'],
    ]);
    pending.delete(3);
    pending.delete(4);
    pending.delete(99);
    expect(pending.entries()).toEqual([[2, 'B']]);
  });

  it('replaces an entry kept in the map even while the fields are free', () => {
    const pending = new PendingCommands<string>();
    pending.set(1, 'a');
    pending.set(2, 'b');
    pending.delete(1);
    pending.set(2, 'B');
    expect(pending.entries()).toEqual([[2, 'B']]);
    pending.delete(2);
    expect(pending.get(2)).toBeUndefined();
    expect(pending.entries()).toEqual([]);
  });

  it('lists entries in command id order wherever each is kept', () => {
    const pending = new PendingCommands<number>();
    for (const id of [5, 6, 7]) pending.set(id, id * 10);
    pending.delete(5);
    pending.set(8, 80);
    pending.delete(7);
    pending.set(9, 90);
    expect(pending.entries().map(([id]) => id)).toEqual([6, 8, 9]);
  });
});
