import { describe, expect, it } from 'vitest';

import { Fifo } from '../../../actors/fifo.js';

describe('Fifo', () => {
  it('hands items out oldest first, and undefined when empty', () => {
    const fifo = new Fifo<number>();
    expect(fifo.shift()).toBeUndefined();
    fifo.push(1);
    fifo.push(2);
    expect(fifo.shift()).toBe(1);
    fifo.push(3);
    expect([fifo.length, fifo.toArray()]).toEqual([2, [2, 3]]);
    expect([fifo.shift(), fifo.shift(), fifo.shift()]).toEqual([2, 3, undefined]);
    expect(fifo.length).toBe(0);
  });

  it('removes the oldest occurrence of an item, at the front or further in, and nothing for one it lacks', () => {
    const fifo = new Fifo<number>();
    for (const item of [1, 2, 3, 2, 4]) fifo.push(item);
    fifo.remove(1);
    fifo.remove(2);
    fifo.remove(9);
    expect(fifo.toArray()).toEqual([3, 2, 4]);
    fifo.shift();
    fifo.remove(4);
    expect(fifo.toArray()).toEqual([2]);
  });

  it('keeps its order across the compactions of a long backlog taken while it grows', () => {
    const fifo = new Fifo<number>();
    const taken: number[] = [];
    let next = 0;
    // Three pushed for every two taken: the backlog grows to 50,000 while 100,000 go through.
    while (next < 150_000) {
      fifo.push(next++);
      fifo.push(next++);
      fifo.push(next++);
      taken.push(fifo.shift()!, fifo.shift()!);
    }
    while (fifo.length > 0) taken.push(fifo.shift()!);
    expect(taken).toEqual(Array.from({ length: 150_000 }, (_, i) => i));
  });

  it('holds no more than twice its items once a backlog is taken, not a slot for each item it ever had', () => {
    const fifo = new Fifo<number>();
    for (let i = 0; i < 100_000; i++) fifo.push(i);
    for (let i = 0; i < 99_000; i++) fifo.shift();
    expect(fifo.length).toBe(1_000);
    // Compacted at least once per halving: the cleared front never outgrows the items left by much.
    expect(fifo.slots).toBeLessThanOrEqual(2 * 1_000 + 1_024);
    expect(fifo.toArray()).toEqual(Array.from({ length: 1_000 }, (_, i) => 99_000 + i));
  });
});
