import type { WorkflowRow } from '../storage/rows.js';
import type { ActorHost } from './actor-host.js';
import type { ActorMessage } from './messages.js';
import { WorkflowActor } from './workflow-actor.js';

/** Actors examined per eviction pass, so a run of busy actors cannot make delivery O(n). */
const EVICTION_SCAN = 32;

/**
 * Routes messages to workflow actors by workflow id, creating (and thereby rehydrating) an actor
 * when none is in memory, and evicting the least recently used idle ones beyond `maxCached`.
 * A Map keeps the LRU order: delivery moves an actor to the end.
 */
export class ActorSystem {
  readonly #host: ActorHost;
  readonly #maxCached: number;
  readonly #actors = new Map<string, WorkflowActor>();
  #evictions = 0;
  #isClosed = false;

  constructor(host: ActorHost, maxCached: number) {
    this.#host = host;
    this.#maxCached = maxCached;
  }

  /** Actors in memory. */
  get size(): number {
    return this.#actors.size;
  }

  /** Actors evicted so far. */
  get evictions(): number {
    return this.#evictions;
  }

  /** Messages waiting in all mailboxes. */
  get queuedMessages(): number {
    let total = 0;
    for (const actor of this.#actors.values()) total += actor.queued;
    return total;
  }

  /**
   * Hands `message` to the workflow's actor. `seed` is the workflow's row when the caller just
   * read or wrote it, which spares a new actor its load.
   */
  deliver(workflowId: string, message: ActorMessage, seed?: WorkflowRow): void {
    if (this.#isClosed) return;
    let actor = this.#actors.get(workflowId);
    if (actor) {
      this.#actors.delete(workflowId);
    } else {
      actor = new WorkflowActor(workflowId, this.#host, (dropped) => this.#forget(dropped), seed);
    }
    this.#actors.set(workflowId, actor);
    actor.push(message);
    if (this.#actors.size > this.#maxCached) this.#evict();
  }

  get(workflowId: string): WorkflowActor | undefined {
    return this.#actors.get(workflowId);
  }

  /** Removes a finished actor at once if it has nothing left to do. */
  release(workflowId: string): void {
    const actor = this.#actors.get(workflowId);
    if (actor?.isFinished && actor.isEvictable) this.#actors.delete(workflowId);
  }

  /** Kills the actors of `workflowIds` (their unflushed state is lost; they rebuild on demand). */
  drop(workflowIds: Iterable<string>): void {
    for (const id of workflowIds) {
      const actor = this.#actors.get(id);
      if (!actor) continue;
      actor.kill();
      this.#actors.delete(id);
    }
  }

  /** Waits until every mailbox is empty (more messages may still arrive afterwards). */
  async drain(): Promise<void> {
    for (;;) {
      const busy = [...this.#actors.values()].filter((a) => !a.isEvictable);
      if (busy.length === 0) return;
      await Promise.all(busy.map((a) => a.drained()));
      // Durable callbacks decrement the unflushed counts; give the WAL a turn to run them.
      await new Promise((resolve) => setImmediate(resolve));
      if (busy.every((a) => a.queued === 0)) return;
    }
  }

  /** Stops delivery and kills every actor. */
  close(): void {
    this.#isClosed = true;
    for (const actor of this.#actors.values()) actor.kill();
    this.#actors.clear();
  }

  #forget(actor: WorkflowActor): void {
    if (this.#actors.get(actor.workflowId) === actor) this.#actors.delete(actor.workflowId);
  }

  #evict(): void {
    let scanned = 0;
    for (const [id, actor] of this.#actors) {
      if (this.#actors.size <= this.#maxCached || scanned++ >= EVICTION_SCAN) return;
      if (!actor.isEvictable) continue;
      this.#actors.delete(id);
      this.#evictions++;
      this.#host.observer.evicted(id);
    }
  }
}
