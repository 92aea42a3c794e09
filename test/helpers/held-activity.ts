import type { ActivityFunction } from 'duraflow';

/** An inline activity that runs until `release()` (then returns 'done'), or until the engine closes. */
export function heldActivity(): { activity: ActivityFunction; release: () => void } {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const activity: ActivityFunction = (_input, ctx) =>
    new Promise<string>((resolve, reject) => {
      void released.then(() => resolve('done'));
      ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason as Error), { once: true });
    });
  return { activity, release };
}

/** An inline activity whose attempt ends only with its engine (it never settles otherwise). */
export const untilClosed: ActivityFunction = (_input, ctx) =>
  new Promise<never>((_resolve, reject) => ctx.signal.addEventListener('abort', () => reject(ctx.signal.reason)));
