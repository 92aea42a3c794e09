import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';

import type { Logger } from '../storage/logger.js';
import { claimLeases, releaseLeases } from '../storage/sql/leases.js';
import type { Sql, Tables } from '../storage/sql.js';

/** What the keeper tells the engine after each claim. */
export interface LeaseChanges {
  /** Names this engine runs from now on (claimed, or claimed again under a new epoch). */
  gained: string[];
  /** Names it must stop running at once (another engine took them, or their epoch changed). */
  lost: string[];
  /**
   * Names it kept, after a time when their leases were overdue and side effects were held back
   * (`mayAct`): what was held back may be released now.
   */
  resumed: string[];
}

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
 * lease expired (their engine stopped or stalled). A claim that fails (the database is away) keeps
 * what it held: the flushes' epoch check keeps the writes safe meanwhile, and the next claim that
 * gets through tells whether another engine took a name. Side effects (dispatching activities,
 * firing timers) need more: a lease that cannot have expired yet by this process's clock (`mayAct`),
 * since an engine that took the name over may be running them already.
 */
export class LeaseKeeper {
  /** Names this engine and process hold, in leases, under this id. */
  readonly owner = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  readonly #options: LeaseKeeperOptions;
  readonly #epochs = new Map<string, string>();
  #timer: NodeJS.Timeout | undefined;
  #claiming: Promise<void> | undefined;
  /** The claim that starts after the running one, which calls made meanwhile share. */
  #nextClaim: Promise<void> | undefined;
  #isClosed = false;
  /** performance.now() before which no lease held can have expired: the last claim's send time + TTL. */
  #currentUntil = 0;
  /** Set when `mayAct` refused a held name because its lease was overdue. */
  #hasHeldBack = false;

  constructor(options: LeaseKeeperOptions) {
    this.#options = options;
  }

  /** The epoch of `name`'s lease, if this engine holds it. */
  epochOf(name: string): string | undefined {
    return this.#epochs.get(name);
  }

  holds(name: string): boolean {
    return this.#epochs.has(name);
  }

  /**
   * Whether this engine may release side effects of `name`'s workflows now: it holds the name, and
   * its lease cannot have expired (renewals failed for less than its time to live; always on the
   * embedded database, which no other engine can reach). The caller keeps what is refused, for
   * when a renewal finds the name still held (`resumed`).
   */
  mayAct(name: string): boolean {
    if (!this.#epochs.has(name)) return false;
    if (this.#options.isExclusive || performance.now() < this.#currentUntil) return true;
    this.#hasHeldBack = true;
    return false;
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
    this.#timer = setInterval(() => void this.claim(), Math.max(1, Math.floor(this.#options.ttlMs / 3)));
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
      this.#nextClaim ??= this.#claiming.then(() => this.#claimLogged());
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
    const claimed = await claimLeases(sql, tables, names, this.owner, ttlMs, isExclusive);
    if (this.#isClosed) return;
    // Answers may come out of order: the newest proof of the lease counts.
    this.#currentUntil = Math.max(this.#currentUntil, sentAt + ttlMs);
    const isResuming = this.#hasHeldBack;
    this.#hasHeldBack = false;
    const gained: string[] = [];
    const lost: string[] = [];
    for (const [name, epoch] of this.#epochs) {
      const now = claimed.get(name);
      if (now === epoch) continue;
      // Another epoch: someone else held it meanwhile, so what this engine knew of it is stale.
      lost.push(name);
      this.#epochs.delete(name);
    }
    const resumed = isResuming ? [...this.#epochs.keys()] : [];
    for (const [name, epoch] of claimed) {
      if (this.#epochs.has(name)) continue;
      gained.push(name);
      this.#epochs.set(name, epoch);
    }
    if (gained.length > 0 || lost.length > 0 || resumed.length > 0) this.#options.onChange({ gained, lost, resumed });
  }
}
