import { queueOptionsSymbol } from 'piscina';
import { describe, expect, it } from 'vitest';

import { BatchQueue } from '../../../dist/engine/batch-queue.js';

/** A task as Piscina hands it to its queue: the payload's queue options under the symbol. */
function task(attempts?: number): { readonly [queueOptionsSymbol]: object | null } {
  return { [queueOptionsSymbol]: attempts === undefined ? null : { attempts } };
}

describe('BatchQueue', () => {
  it('counts the attempts of the batches it holds, first in first out, and none for other tasks', () => {
    const queue = new BatchQueue();
    const [a, b, describeTask] = [task(3), task(2), task()];
    queue.push(a);
    queue.push(b);
    queue.push(describeTask);
    expect([queue.size, queue.attempts]).toEqual([3, 5]);
    expect(queue.shift()).toBe(a);
    expect(queue.attempts).toBe(2);
    // Piscina puts a task it could not hand to a thread back in front.
    queue.unshift(a);
    expect([queue.size, queue.attempts]).toEqual([3, 5]);
    queue.remove(b);
    expect([queue.size, queue.attempts]).toEqual([2, 3]);
    // Removing it again (an abort is idempotent) changes nothing.
    queue.remove(b);
    expect([queue.size, queue.attempts]).toEqual([2, 3]);
    expect([queue.shift(), queue.shift(), queue.shift()]).toEqual([a, describeTask, null]);
    expect([queue.size, queue.attempts]).toEqual([0, 0]);
  });
});
