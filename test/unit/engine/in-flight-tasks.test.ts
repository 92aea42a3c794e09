import { describe, expect, it } from 'vitest';

import { InFlightTasks } from '../../../engine/in-flight-tasks.js';

describe('InFlightTasks', () => {
  it('refuses a task already running, one or many per workflow, until it is deleted', () => {
    const tasks = new InFlightTasks();
    expect(tasks.add('w', 1)).toBe(true);
    expect(tasks.add('w', 1)).toBe(false);
    expect(tasks.add('v', 1)).toBe(true);
    expect(tasks.add('w', 2)).toBe(true);
    expect(tasks.add('w', 3)).toBe(true);
    expect([tasks.add('w', 1), tasks.add('w', 2), tasks.add('w', 3)]).toEqual([false, false, false]);
    tasks.delete('w', 2);
    expect(tasks.add('w', 2)).toBe(true);
    for (const id of [1, 2, 3]) tasks.delete('w', id);
    // Emptied, the workflow's entry is gone: a new task is its only one again.
    expect(tasks.add('w', 1)).toBe(true);
    tasks.delete('w', 7);
    expect(tasks.add('w', 1)).toBe(false);
    tasks.delete('w', 1);
    expect(tasks.add('w', 1)).toBe(true);
  });
});
