let sharedTick: Promise<void> | undefined;

/**
 * Resolves once every microtask queued so far has run: by then workflow code resumed by this
 * activation is blocked again. All actors activated in the same drain of the microtask queue
 * share it.
 *
 * A nextTick scheduled from inside a microtask runs only when the microtask queue is empty,
 * including the microtasks queued while it drained (Node's processTicksAndRejections); the
 * queueMicrotask around it makes sure it is scheduled from inside one. Unlike setImmediate, this
 * does not wait for a turn of the event loop, which under load is milliseconds per step.
 */
export function drainWorkflowCode(): Promise<void> {
  sharedTick ??= new Promise((resolve) =>
    queueMicrotask(() =>
      process.nextTick(() => {
        sharedTick = undefined;
        resolve();
      }),
    ),
  );
  return sharedTick;
}
