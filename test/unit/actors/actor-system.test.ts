import { describe, expect, it } from 'vitest';

import type { ActorHost } from '../../../actors/actor-host.js';
import { ActorSystem } from '../../../actors/actor-system.js';

describe('ActorSystem', () => {
  it('drops an actor however many messages are queued for it', () => {
    // Dropped in the same synchronous run, the actor never runs: the host is never used.
    const system = new ActorSystem({ observer: { evicted() {} } } as unknown as ActorHost, 10);
    // More than a call's argument list can hold, so spreading them anywhere would throw.
    for (let i = 0; i < 200_000; i++) system.deliver('w', { type: 'timerFired', commandId: i });
    expect(() => system.drop(['w'])).not.toThrow();
    expect(system.get('w')).toBeUndefined();
  });
});
