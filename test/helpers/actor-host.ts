import type { ActorHost, Effects } from '../../actors/actor-host.js';
import type { WorkflowFunction } from '../../actors/workflow-context.js';
import { JsonCodec } from '../../engine/codec.js';
import { workflowErrors } from '../../engine/workflow-errors.js';
import type { WorkflowWrite } from '../../storage/rows.js';

/**
 * An ActorHost for the actor unit tests: it runs `workflow` under every name, and its WAL keeps
 * each write, committing it at once or, with `isHeld`, when `commit()` says. Evictions and
 * released steps go to the callbacks given; nothing else is released.
 */
export function actorTestHost(options: {
  workflow: WorkflowFunction<never, unknown>;
  isHeld?: boolean;
  evicted?: (workflowId: string) => void;
  release?: (workflowId: string, effects: Effects) => void;
}): { host: ActorHost; writes: WorkflowWrite[]; commit(): void } {
  const writes: WorkflowWrite[] = [];
  const held: ((isRefused: boolean) => void)[] = [];
  const host = {
    codec: new JsonCodec(1024 * 1024),
    errors: workflowErrors,
    logger: { debug() {}, info() {}, warn() {}, error() {} },
    observer: { parked() {}, rehydrated() {}, evicted: options.evicted ?? (() => undefined) },
    wal: {
      isCongested: false,
      isClosed: false,
      enqueue(write: WorkflowWrite, onDurable?: (isRefused: boolean) => void) {
        writes.push(write);
        if (options.isHeld) held.push(onDurable ?? (() => undefined));
        else queueMicrotask(() => onDurable?.(false));
      },
    },
    workflow: () => options.workflow,
    release: options.release ?? (() => undefined),
    rebuild() {},
    readInbox() {},
  } as unknown as ActorHost;
  const commit = (): void => {
    for (const onDurable of held.splice(0)) onDurable(false);
  };
  return { host, writes, commit };
}
