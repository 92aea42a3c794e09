import { describe, expect, it } from 'vitest';

import type { ActorHost } from '../../../actors/actor-host.js';
import { ActorSystem } from '../../../actors/actor-system.js';
import type { WorkflowRow } from '../../../storage/rows.js';
import { actorTestHost } from '../../helpers/actor-host.js';
import { waitFor } from '../../helpers/wait-for.js';

async function returnsAtOnce(): Promise<string> {
  return 'done';
}

/**
 * An ActorSystem over a host whose WAL holds every write until `commit()`, and which releases
 * nothing by itself: what the system evicts, and how many writes its actors made.
 */
function systemWithHeldCommits(maxCached: number): { system: ActorSystem; evicted: string[]; writes: () => number; commit(): void } {
  const evicted: string[] = [];
  const { host, writes, commit } = actorTestHost({ workflow: returnsAtOnce, isHeld: true, evicted: (id) => evicted.push(id) });
  return { system: new ActorSystem(host, maxCached), evicted, writes: () => writes.length, commit };
}

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

  it('does not count a finished workflow that a trim takes out of memory as an eviction', async () => {
    const { system, evicted, writes, commit } = systemWithHeldCommits(1);
    const seed = (id: string) => ({ id, name: 'returnsAtOnce', version: '1', status: 'pending', input: null, error: null }) as WorkflowRow;
    // Both steps wait for their commit: neither actor can leave, so the one-actor cache holds two.
    system.deliver('a', { type: 'start' }, seed('a'));
    system.deliver('b', { type: 'start' }, seed('b'));
    await waitFor(() => writes() === 2, 'both first steps');
    commit();
    expect(system.size).toBe(2);
    // As the engine trims after a commit, before the finished workflow is released.
    system.trim();
    expect(system.size).toBe(1);
    // Nothing will ever rebuild a finished workflow: taking it out is not a cache miss to come.
    expect(evicted).toEqual([]);
    system.close();
  });
});
