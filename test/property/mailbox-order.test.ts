import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { Mailbox } from '../../actors/mailbox.js';

type Op =
  | { kind: 'push' }
  /** Lets promise callbacks run, but no I/O or immediates. */
  | { kind: 'microtask' }
  /** One full turn of the event loop. */
  | { kind: 'turn' }
  /** Ends the oldest running handler, successfully or with an error. */
  | { kind: 'release'; fail: boolean };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.constant<Op>({ kind: 'push' }) },
  fc.constant<Op>({ kind: 'microtask' }),
  fc.constant<Op>({ kind: 'turn' }),
  { weight: 2, arbitrary: fc.boolean().map((fail): Op => ({ kind: 'release', fail })) },
);

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('Mailbox (property)', () => {
  it('hands every message over exactly once, in push order, one batch at a time', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 80, size: 'max' }), async (ops) => {
        const batches: (readonly number[])[] = [];
        const gates: { resolve: () => void; reject: (error: Error) => void }[] = [];
        const errors: unknown[] = [];
        let active = 0;
        let maxActive = 0;
        const mailbox = new Mailbox<number>(
          async (batch) => {
            active++;
            maxActive = Math.max(maxActive, active);
            batches.push(batch);
            try {
              await new Promise<void>((resolve, reject) => gates.push({ resolve, reject }));
            } finally {
              active--;
            }
          },
          (error) => errors.push(error),
        );

        let pushed = 0;
        let failed = 0;
        for (const op of ops) {
          switch (op.kind) {
            case 'push':
              mailbox.push(pushed++);
              break;
            case 'microtask':
              await Promise.resolve();
              break;
            case 'turn':
              await turn();
              break;
            case 'release': {
              const gate = gates.shift();
              if (!gate) break;
              if (op.fail) {
                failed++;
                gate.reject(new Error('handler failed'));
              } else {
                gate.resolve();
              }
              break;
            }
          }
        }
        while (!mailbox.isIdle) {
          for (const gate of gates.splice(0)) gate.resolve();
          await turn();
        }
        await mailbox.drained();

        expect(batches.flat()).toEqual(Array.from({ length: pushed }, (_, i) => i));
        expect(batches.every((b) => b.length > 0)).toBe(true);
        expect(maxActive).toBeLessThanOrEqual(1);
        expect(errors).toHaveLength(failed);
        expect(mailbox.depth).toBe(0);
      }),
      { numRuns: 300 },
    );
  });
});
