import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';

import type { Logger } from '../storage/logger.js';
import { claimLeases, readLeases, releaseLeases } from '../storage/sql/leases.js';
import type { Sql, Tables } from '../storage/sql.js';

import { hasEnded, thisProcess } from './process-identity.js';

/** What the keeper tells the engine after each claim that got through (both lists may be empty). */
export interface LeaseChanges {
  /** Names this engine runs from now on (claimed, or claimed again under a new epoch). */
  gained: string[];
  /** Names it must stop running at once (another engine took them, or their epoch changed). */
  lost: string[];
}

/** What may happen now to a side effect of a workflow (see `LeaseKeeper.gate`). */
export type Gate = 'release' | 'holdBack' | 'drop';

export interface LeaseKeeperOptions {
  sql: Sql;
  tables: Tables;
  names: readonly string[];
  ttlMs: number;
  /** No other engine can reach this database (the embedded one): take every lease at once. */
  isExclusive: boolean;
  logger: Logger;
  onChange: (changes: LeaseChanges) => void;
}

/**
 * Holds the leases of the workflow names an engine registers. It claims them at start and every
 * third of the lease's time to live after: a claim renews the names it holds and takes those whose
 * lease expired (their engine stopped or stalled) or whose engine it saw end on this machine. A
 * claim that fails (the database is away) keeps
 * what it held: the flushes' epoch check keeps the writes safe meanwhile, and the next claim that
 * gets through tells whether another engine took a name. Side effects (dispatching activities,
 * firing timers) need more: a lease that cannot have expired yet by this process's clock (`gate`),
 * since an engine that took the name over may be running them already.
 *
 * Modes:
 * - starting: the first claim runs; its failure is thrown to `start()`'s caller.
 * - renewing: a claim every third of the TTL, at most one running and one queued behind it.
 * - overdue: no claim got through for a TTL (`performance.now()` past `#safeUntil`): `gate` says
 *   hold back for the names held, until the next claim that gets through.
 * - closed: no more claims; the leases held are released.
 */
export class LeaseKeeper {
  /** This engine's id in the leases table (`host:pid:` and 8 hex digits), new for each engine. */
  readonly owner = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  /**
   * Where this engine runs, stored with its leases so that one on the same machine can tell when it
   * ends, followed by its owner id: a lease whose owner an engine of an earlier release changed
   * (its claim leaves `process` as it was) then names another owner, and is not taken for it.
   */
  readonly #process = withOwner(thisProcess(), this.owner);
  readonly #options: LeaseKeeperOptions;
  readonly #epochs = new Map<string, string>();
  #timer: NodeJS.Timeout | undefined;
  #claiming: Promise<void> | undefined;
  /** The claim that starts after the running one, which calls made meanwhile share. */
  #nextClaim: Promise<void> | undefined;
  #isClosed = false;
  /** performance.now() before which no lease held can have expired: the last claim's send time + TTL. */
  #safeUntil = 0;

  constructor(options: LeaseKeeperOptions) {
    this.#options = options;
  }

  /** The epoch of `name`'s lease, if this engine holds it. */
  epochOf(name: string): string | undefined {
    return this.#epochs.get(name);
  }

  /** Whether this engine holds `name`'s lease (as of its last claim that got through). */
  holds(name: string): boolean {
    return this.#epochs.has(name);
  }

  /**
   * What may happen now to a side effect of a workflow named `name`: released if this engine holds
   * the name and its lease cannot have expired (renewals failed for less than its time to live;
   * always on the embedded database, which no other engine can reach); held back if the lease is
   * only overdue, until a claim gets through; dropped if the name is not held (whoever holds it
   * recovers the work from the database).
   */
  gate(name: string): Gate {
    if (!this.#epochs.has(name)) return 'drop';
    return this.#options.isExclusive || performance.now() < this.#safeUntil ? 'release' : 'holdBack';
  }

  /** Names held now. */
  get held(): string[] {
    return [...this.#epochs.keys()];
  }

  /** Claims once (its failure is thrown), then keeps claiming on the lease's beat. */
  async start(): Promise<void> {
    const first = this.#claim();
    // A notice meanwhile waits for this claim rather than running beside it.
    this.#claiming = first.catch(() => undefined);
    try {
      await first;
    } finally {
      this.#claiming = undefined;
    }
    this.#timer = setInterval(() => void this.claim(), Math.floor(this.#options.ttlMs / 3));
    this.#timer.unref();
  }

  /**
   * Claims now (a notice said a lease was released, or a flush found one lost); resolves after a
   * claim that started after this call. Calls made while a claim runs share the one after it.
   */
  claim(): Promise<void> {
    if (this.#isClosed) return Promise.resolve();
    if (this.#nextClaim) return this.#nextClaim;
    if (this.#claiming) {
      this.#nextClaim = this.#claiming.then(() => this.#claimLogged());
      return this.#nextClaim;
    }
    return this.#claimLogged();
  }

  #claimLogged(): Promise<void> {
    this.#nextClaim = undefined;
    if (this.#isClosed) return Promise.resolve();
    const claiming = this.#claim()
      .catch((error: unknown) => this.#options.logger.warn({ err: error }, 'renewing the workflow leases failed; will retry'))
      .finally(() => {
        if (this.#claiming === claiming) this.#claiming = undefined;
      });
    this.#claiming = claiming;
    return claiming;
  }

  /**
   * Stops claiming and ends the leases held, so another engine can take them at once; tells
   * whether it did (if the database is away, they expire on their own).
   */
  async close(): Promise<boolean> {
    this.#isClosed = true;
    clearInterval(this.#timer);
    await this.#claiming;
    const held = this.held;
    this.#epochs.clear();
    if (held.length === 0) return false;
    try {
      await releaseLeases(this.#options.sql, this.#options.tables, held, this.owner);
      return true;
    } catch (error) {
      // Best effort: unreleased, the leases expire in their time.
      this.#options.logger.warn({ err: error }, 'releasing the workflow leases failed; they expire on their own');
      return false;
    }
  }

  async #claim(): Promise<void> {
    const { sql, tables, names, ttlMs, isExclusive } = this.#options;
    const sentAt = performance.now();
    const endedOwners = isExclusive || this.#epochs.size === names.length ? [] : await this.#endedHolders();
    const claimed = await claimLeases(sql, tables, names, { owner: this.owner, process: this.#process, isExclusive, endedOwners }, ttlMs);
    if (this.#isClosed) return;
    // Answers may come out of order: the newest proof of the lease counts.
    this.#safeUntil = Math.max(this.#safeUntil, sentAt + ttlMs);
    const gained: string[] = [];
    const lost: string[] = [];
    for (const [name, epoch] of this.#epochs) {
      if (claimed.get(name) === epoch) continue;
      // Not claimed (another engine holds it now) or under a new epoch (another held it
      // meanwhile): what this engine knew of it is stale.
      lost.push(name);
      this.#epochs.delete(name);
    }
    for (const [name, epoch] of claimed) {
      if (this.#epochs.has(name)) continue;
      gained.push(name);
      this.#epochs.set(name, epoch);
    }
    this.#options.onChange({ gained, lost });
  }

  /**
   * Holders of names this engine registers whose process, on this machine, has ended (a crash, a
   * kill): their leases can be taken now rather than at expiry, as when this engine restarts
   * after being killed. Nothing of theirs can commit after the takeover: a flush they sent before
   * dying holds the lease row until it ends, and then fails the epoch check if it comes later.
   */
  async #endedHolders(): Promise<string[]> {
    const self = this.#process;
    if (self === undefined) return [];
    const registered = new Set(this.#options.names);
    const ended = new Set<string>();
    for (const lease of await readLeases(this.#options.sql, this.#options.tables)) {
      if (!registered.has(lease.name) || lease.is_expired || lease.owner === this.owner) continue;
      // Written by the owner itself, not left by an earlier holder (see `#process`).
      if (lease.process === null || !lease.process.endsWith(` ${lease.owner}`)) continue;
      if (ended.has(lease.owner) || (await hasEnded(lease.process, self))) ended.add(lease.owner);
    }
    if (ended.size > 0) {
      this.#options.logger.info({ owners: [...ended] }, 'taking over the leases of engines on this machine whose process has ended');
    }
    return [...ended];
  }
}

/** `identity` followed by `owner` (see `LeaseKeeper.#process`), or undefined where there is none. */
function withOwner(identity: string | undefined, owner: string): string | undefined {
  return identity === undefined ? undefined : `${identity} ${owner}`;
}
