import type { WorkflowRow } from '../storage/rows.js';
import type { ActorHost } from './actor-host.js';
import type { ActorMessage } from './messages.js';
import { type Creation, WorkflowActor } from './workflow-actor.js';

/** Actors examined per eviction pass, so a run of busy actors cannot make delivery O(n). */
const EVICTION_SCAN = 32;

interface Entry {
  actor: WorkflowActor;
  prev: Entry | undefined;
  next: Entry | undefined;
}

/**
 * Routes messages to workflow actors by workflow id, creating (and thereby rehydrating) an actor
 * when none is in memory, and evicting the least recently used idle ones beyond `maxCached`.
 * Recency is an intrusive doubly linked list (head = least recent): touching an actor relinks two
 * nodes, where re-inserting into a Map would churn its hash table on every message.
 */
export class ActorSystem {
  readonly #host: ActorHost;
  readonly #maxCached: number;
  readonly #entries = new Map<string, Entry>();
  #head: Entry | undefined;
  #tail: Entry | undefined;
  #isClosed = false;

  constructor(host: ActorHost, maxCached: number) {
    this.#host = host;
    this.#maxCached = maxCached;
  }

  /** Actors in memory. */
  get size(): number {
    return this.#entries.size;
  }

  /** Messages waiting in all mailboxes. */
  get queuedMessages(): number {
    let total = 0;
    for (const { actor } of this.#entries.values()) total += actor.queued;
    return total;
  }

  /**
   * Hands `message` to the workflow's actor. `seed` is the workflow's row when the caller just
   * read or wrote it, which spares a new actor its load.
   */
  deliver(workflowId: string, message: ActorMessage, seed?: WorkflowRow, creation?: Creation): void {
    if (this.#isClosed) return;
    let entry = this.#entries.get(workflowId);
    if (entry) {
      this.#unlink(entry);
    } else {
      const actor = new WorkflowActor(workflowId, this.#host, (dropped) => this.#forget(dropped), seed, creation);
      entry = { actor, prev: undefined, next: undefined };
      this.#entries.set(workflowId, entry);
    }
    this.#append(entry);
    entry.actor.push(message);
    if (this.#entries.size > this.#maxCached) this.trim();
  }

  get(workflowId: string): WorkflowActor | undefined {
    return this.#entries.get(workflowId)?.actor;
  }

  /** Removes a finished actor at once if it has nothing left to do. */
  release(workflowId: string): void {
    const entry = this.#entries.get(workflowId);
    if (entry?.actor.isFinished && entry.actor.isEvictable) this.#remove(entry);
  }

  /** Evicts least recently used idle actors while there are more than `maxCached`. */
  trim(): void {
    let scanned = 0;
    let entry = this.#head;
    while (entry && this.#entries.size > this.#maxCached && scanned++ < EVICTION_SCAN) {
      const next = entry.next;
      if (entry.actor.isEvictable) {
        this.#remove(entry);
        this.#host.observer.evicted(entry.actor.workflowId);
      }
      entry = next;
    }
  }

  /** Kills the actors of `workflowIds` (their unflushed state is lost; they rebuild on demand). */
  drop(workflowIds: Iterable<string>): void {
    for (const id of workflowIds) {
      const entry = this.#entries.get(id);
      if (!entry) continue;
      entry.actor.kill();
      this.#remove(entry);
    }
  }

  /** Waits until every mailbox is empty (more messages may still arrive afterwards). */
  async drain(): Promise<void> {
    for (;;) {
      const busy = [...this.#entries.values()].map((e) => e.actor).filter((a) => !a.isEvictable);
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
    for (const { actor } of this.#entries.values()) actor.kill();
    this.#entries.clear();
    this.#head = undefined;
    this.#tail = undefined;
  }

  #forget(actor: WorkflowActor): void {
    const entry = this.#entries.get(actor.workflowId);
    if (entry?.actor === actor) this.#remove(entry);
  }

  #remove(entry: Entry): void {
    this.#unlink(entry);
    this.#entries.delete(entry.actor.workflowId);
  }

  #append(entry: Entry): void {
    entry.prev = this.#tail;
    entry.next = undefined;
    if (this.#tail) this.#tail.next = entry;
    else this.#head = entry;
    this.#tail = entry;
  }

  #unlink(entry: Entry): void {
    if (entry.prev) entry.prev.next = entry.next;
    else if (this.#head === entry) this.#head = entry.next;
    if (entry.next) entry.next.prev = entry.prev;
    else if (this.#tail === entry) this.#tail = entry.prev;
    entry.prev = undefined;
    entry.next = undefined;
  }
}
