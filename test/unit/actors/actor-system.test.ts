import { describe, expect, it } from 'vitest';

import type { ActorHost } from '../../../actors/actor-host.js';
import { ActorSystem } from '../../../actors/actor-system.js';
import type { WorkflowRow } from '../../../storage/rows.js';

describe('ActorSystem', () => {
  it('drops an actor however many messages are queued for it', () => {
    // Dropped in the same synchronous run, the actor never runs: the host is never used.
    const system = new ActorSystem({ observer: { evicted() {} } } as unknown as ActorHost, 10);
    // More than a call's argument list can hold, so spreading them anywhere would throw.
    for (let i = 0; i < 200_000; i++) system.deliver('w', { type: 'timerFired', commandId: i });
    expect(() => system.drop(['w'])).not.toThrow();
    expect(system.get('w')).toBeUndefined();
  });

  it('keeps starts that find the cache full, each once, and counts only stored ones as running here', () => {
    // Everything below runs in one synchronous run and ends with close(): no actor ever runs.
    const system = new ActorSystem({ observer: { evicted() {} } } as unknown as ActorHost, 1);
    // An actor with a message in hand cannot be evicted: the one-actor cache is full.
    system.deliver('busy', { type: 'timerFired', commandId: 1 });
    const stored = { id: 'stored', status: 'pending' } as WorkflowRow;
    system.deliverWhenRoom('stored', { type: 'start' }, stored);
    system.deliverWhenRoom('stored', { type: 'start' });
    // A poll finds a row before the start that stored it hands it over.
    system.deliverWhenRoom('polled', { type: 'start' });
    expect(system.isRunningHere('polled')).toBe(false);
    system.deliverWhenRoom('polled', { type: 'start' }, { id: 'polled', status: 'pending' } as WorkflowRow);
    system.deliverWhenRoom('unknown', { type: 'start' });
    expect(system.waitingWorkflows).toBe(3);
    expect(system.get('stored')).toBeUndefined();
    expect([system.isRunningHere('stored'), system.isRunningHere('polled'), system.isRunningHere('unknown')]).toEqual([
      true,
      true,
      false,
    ]);
    system.close();
    expect(system.waitingWorkflows).toBe(0);
  });
});
