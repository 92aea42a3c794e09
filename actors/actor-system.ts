import type { WorkflowRow, WorkflowWrite } from '../storage/rows.js';
import type { ActorHost } from './actor-host.js';
import type { ActorMessage } from './messages.js';
import type { ActorOwner } from './actor-owner.js';
import { type Creation, WorkflowActor } from './workflow-actor.js';

/** Actors examined per eviction pass, so a run of busy actors cannot make delivery O(n). */
const EVICTION_SCAN = 32;

const isStart = (message: ActorMessage): boolean => message.type === 'start';

/**
 * An actor that has been in memory this long counts as parked even while it awaits an activity:
 * more workflows in flight than the cache holds take turns of this length (none waits for room
 * for ever behind workflows that never park), and one replay per turn costs little beside it.
 */
const TURN_MS = 30_000;

interface Entry {
  actor: WorkflowActor;
  /** performance.now() when the actor came into memory. */
  since: number;
  prev: Entry | undefined;
  next: Entry | undefined;
}

/**
 * Routes messages to workflow actors by workflow id, creating (and thereby rehydrating) an actor
 * when none is in memory, and evicting the least recently used idle ones beyond `maxCached`.
 * Recency is an intrusive doubly linked list (head = least recent): touching an actor relinks two
 * nodes, where re-inserting into a Map would churn its hash table on every message.
 *
 * Eviction prefers parked actors (idle, awaiting a timer or an event) to those awaiting an
 * activity: those are needed again as soon as the attempt ends, and evicting them only makes them
 * replay their history then. So starts, and activity results for workflows not in memory, are
 * admitted only while there is room: fewer actors than `maxCached`, or a parked one to evict.
 * Otherwise they wait here (a start's row is stored; a result is where a mailbox would hold it)
 * until a workflow finishes or parks, or has had its turn (TURN_MS): more workflows in flight than
 * the cache holds run in turns, instead of each step replaying its workflow from the database.
 */
export class ActorSystem {
  readonly #host: ActorHost;
  readonly #maxCached: number;
  readonly #entries = new Map<string, Entry>();
  /** Messages for workflows not in memory, waiting for room; in arrival order. */
  readonly #waiting = new Map<string, { seed: WorkflowRow | undefined; messages: ActorMessage[] }>();
  #head: Entry | undefined;
  #tail: Entry | undefined;
  #isClosed = false;
  #isClosing = false;
  readonly #owner: ActorOwner = {
    dropped: (actor) => this.#forget(actor),
    // A finished workflow's actor (brought back by a late message) leaves as `release` has it.
    idleWithoutWrite: (actor) => {
      if (this.#entries.get(actor.workflowId)?.actor !== actor) return;
      if (actor.isFinished) this.release(actor.workflowId);
      else this.stepCommitted(actor.workflowId);
    },
  };

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
    // What waited for room for this workflow goes first (its start, with the row it stored).
    if (this.#waiting.size > 0) this.#admit(workflowId);
    this.#deliverNow(workflowId, message, seed, creation);
  }

  /** `entry` is the workflow's, when the caller has looked it up already. */
  #deliverNow(
    workflowId: string,
    message: ActorMessage,
    seed?: WorkflowRow,
    creation?: Creation,
    entry = this.#entries.get(workflowId),
  ): void {
    if (entry) {
      this.#unlink(entry);
    } else {
      const actor = new WorkflowActor(workflowId, this.#host, this.#owner, seed, creation);
      entry = { actor, since: performance.now(), prev: undefined, next: undefined };
      this.#entries.set(workflowId, entry);
    }
    this.#append(entry);
    entry.actor.push(message);
    if (this.#entries.size > this.#maxCached) this.trim();
  }

  /** Workflows with messages waiting for room. */
  get waitingWorkflows(): number {
    return this.#waiting.size;
  }

  /**
   * Whether the workflow will run to its end here, so its end is announced here: its actor is in
   * memory and running, or a start this engine stored waits for room with the row it stored (a
   * start found by a poll carries no row and may be stale).
   */
  isRunningHere(workflowId: string): boolean {
    return (this.#entries.get(workflowId)?.actor.isRunning ?? false) || this.#waiting.get(workflowId)?.seed !== undefined;
  }

  /**
   * Whether a start may create an actor now: nothing is waiting for room before it, and there are
   * fewer actors than `maxCached` or a parked one could be evicted (it is).
   */
  makeRoomForStart(): boolean {
    return this.#waiting.size === 0 && this.#makeRoom();
  }

  /**
   * Hands `message` to the workflow's actor now if it is in memory or there is room for it, else
   * keeps it until there is (workflows are admitted in the order their first message came, each
   * with its messages in order). For what brings many workflows back at once: starts, and the
   * activity results of a recovery (a start's row must be stored).
   */
  deliverWhenRoom(workflowId: string, message: ActorMessage, seed?: WorkflowRow): void {
    if (this.#isClosed) return;
    // In memory, nothing waits for it: what did was delivered when its actor came in.
    const entry = this.#entries.get(workflowId);
    if (entry) {
      this.#deliverNow(workflowId, message, seed, undefined, entry);
      return;
    }
    const waiting = this.#waiting.get(workflowId);
    if (!waiting) {
      this.#waiting.set(workflowId, { seed, messages: [message] });
    } else {
      // A start is delivered once however often the polls find its row; a poll may have found it
      // before the start that stored it came with the row.
      if (message.type !== 'start' || !waiting.messages.some(isStart)) waiting.messages.push(message);
      waiting.seed ??= seed;
    }
    this.admitWaiting();
  }

  /**
   * After a step of `workflowId` committed, or its actor went idle writing nothing: if its actor
   * parked (it now sleeps or waits for an event), a waiting workflow takes its place. Looking at
   * this actor alone keeps it O(1) per step; the scans from the cold end run when a workflow
   * finishes and on the poll's beat.
   */
  stepCommitted(workflowId: string): void {
    // Over the limit, evicting it would admit no one (the trim before this evicts parked ones).
    if (this.#waiting.size === 0 || this.#entries.size > this.#maxCached) return;
    const entry = this.#entries.get(workflowId);
    if (!entry) return;
    const { actor } = entry;
    // A finished actor leaves by `release`, which admits in its place.
    if (actor.isFinished || !actor.isEvictable || actor.awaitsActivity) return;
    this.#evict(entry);
    this.admitWaiting();
  }

  /** Admits waiting workflows while there is room (after actors left memory or parked). */
  admitWaiting(): void {
    for (const workflowId of this.#waiting.keys()) {
      if (this.#isClosed || this.#isClosing || !this.#makeRoom()) return;
      this.#admit(workflowId);
    }
  }

  /**
   * The engine is closing: activity results waiting for room go to their workflows whatever the
   * cache holds, so the steps they start commit before it stops (otherwise the activities would
   * run again after a restart); starts stay stored for the next start of the engine. Nothing is
   * admitted from then on.
   */
  admitResultsForClose(): void {
    this.#isClosing = true;
    for (const [workflowId, { messages }] of this.#waiting) {
      if (!messages.some(isStart)) this.#admit(workflowId);
    }
    this.#waiting.clear();
  }

  /** Delivers what waits for `workflowId`, if anything does. */
  #admit(workflowId: string): void {
    const waiting = this.#waiting.get(workflowId);
    if (!waiting) return;
    this.#waiting.delete(workflowId);
    for (const message of waiting.messages) this.#deliverNow(workflowId, message, waiting.seed);
  }

  get(workflowId: string): WorkflowActor | undefined {
    return this.#entries.get(workflowId)?.actor;
  }

  /** Removes a finished actor at once if it has nothing left to do. */
  release(workflowId: string): void {
    const entry = this.#entries.get(workflowId);
    if (entry?.actor.isFinished && entry.actor.isEvictable) {
      this.#remove(entry);
      this.admitWaiting();
    }
  }

  /**
   * Evicts least recently used idle actors while there are more than `maxCached`: parked ones
   * first, then, if that was not enough, ones awaiting an activity.
   */
  trim(): void {
    let isOver = this.#entries.size > this.#maxCached;
    while (isOver && this.#evictParked()) isOver = this.#entries.size > this.#maxCached;
    let scanned = 0;
    let entry = this.#head;
    while (entry && this.#entries.size > this.#maxCached && scanned++ < EVICTION_SCAN) {
      const next = entry.next;
      if (entry.actor.isEvictable) this.#evict(entry);
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
    this.admitWaiting();
  }

  /**
   * Kills the actors of `workflowIds`, whose uncommitted writes (`discarded`, by workflow) a
   * failed flush discarded; returns, by workflow, what each handed back for its rebuild (see
   * `WorkflowActor.killUncommitted`).
   */
  dropUncommitted(
    workflowIds: Iterable<string>,
    discarded: ReadonlyMap<string, readonly WorkflowWrite[]>,
  ): Map<string, ActorMessage[]> {
    const handed = new Map<string, ActorMessage[]>();
    for (const id of workflowIds) {
      // The actor tells its owner it dropped, which forgets it and admits a waiting workflow.
      const actor = this.#entries.get(id)?.actor;
      if (actor) handed.set(id, actor.killUncommitted(discarded.get(id) ?? []));
    }
    return handed;
  }

  /**
   * Kills the actors of workflows named in `names` (this engine no longer runs them), and forgets
   * the starts this engine stored for them that wait for room. What waits without a row (results,
   * polled starts), and an actor still loading its row, drops itself once its row shows the name
   * is not run here.
   */
  dropNamed(names: ReadonlySet<string>): void {
    const ids: string[] = [];
    for (const [id, { actor }] of this.#entries) if (names.has(actor.workflowName)) ids.push(id);
    for (const [id, { seed }] of this.#waiting) if (seed && names.has(seed.name)) this.#waiting.delete(id);
    this.drop(ids);
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
    this.#waiting.clear();
    this.#head = undefined;
    this.#tail = undefined;
  }

  #forget(actor: WorkflowActor): void {
    const entry = this.#entries.get(actor.workflowId);
    if (entry?.actor !== actor) return;
    this.#remove(entry);
    this.admitWaiting();
  }

  #makeRoom(): boolean {
    return this.#entries.size < this.#maxCached || this.#evictParked();
  }

  /**
   * Evicts the least recently used parked actor among the first EVICTION_SCAN, if there is one:
   * idle, and waiting for a timer or an event, or in memory for a turn (TURN_MS).
   */
  #evictParked(): boolean {
    const turnStartedBefore = performance.now() - TURN_MS;
    let scanned = 0;
    for (let entry = this.#head; entry && scanned++ < EVICTION_SCAN; entry = entry.next) {
      const { actor } = entry;
      if (actor.isEvictable && (entry.since < turnStartedBefore || !actor.awaitsActivity)) {
        this.#evict(entry);
        return true;
      }
    }
    return false;
  }

  #evict(entry: Entry): void {
    this.#remove(entry);
    // A finished workflow's actor that a trim takes before `release` does is released, not
    // evicted: no message will bring it back, so it is no cache miss to come.
    if (!entry.actor.isFinished) this.#host.observer.evicted(entry.actor.workflowId);
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
