import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';

import { pause, retryDelayMs } from '../storage/backoff.js';
import type { Logger } from '../storage/logger.js';
import { isRetryable } from '../storage/pg-errors.js';
import { hasProcessEnded, processIdentity } from '../storage/process-identity.js';
import { claimLeases, type EndedHolder, readLeases, releaseLeases } from '../storage/sql/leases.js';
import type { Sql, Tables } from '../storage/sql.js';

/** Tries of the release at close, a moment apart (see `close`). */
const RELEASE_TRIES = 3;

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
 * claim that fails (the database is away) keeps what it held: the flushes' epoch check keeps the
 * writes safe meanwhile, and the next claim that gets through tells whether another engine took a
 * name. Side effects (dispatching activities,
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
   * Where this engine runs (see `processIdentity`), stored with its leases as `<identity> <owner>`
   * so that an engine on the same machine can tell when it has ended. An engine of an earlier
   * release claims without writing it: a row whose identity does not end with its owner was left
   * by an earlier holder and says nothing about the current one.
   */
  readonly #processIdentity: string | undefined;
  readonly #options: LeaseKeeperOptions;
  readonly #epochs = new Map<string, string>();
  #timer: NodeJS.Timeout | undefined;
  #claiming: Promise<void> | undefined;
  /** The claim that starts after the running one, which calls made meanwhile share. */
  #nextClaim: Promise<void> | undefined;
  #isClosed = false;
  /**
   * A claim was sent: it may have taken names even if this engine never learnt it did (its answer
   * lost, or it failed after committing), which close() must end too.
   */
  #hasSentClaim = false;
  /** performance.now() before which no lease held can have expired: the last claim's send time + TTL. */
  #safeUntil = 0;

  constructor(options: LeaseKeeperOptions) {
    this.#options = options;
    const identity = processIdentity();
    this.#processIdentity = identity === undefined ? undefined : `${identity} ${this.owner}`;
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
    this.#epochs.clear();
    if (!this.#hasSentClaim) return false;
    // Every registered name, not only those held: a claim under way when close() was called
    // records nothing of what it took, nor does one whose answer was lost (the first, say, which
    // failed the engine's start), and what they took would stay taken until it expired.
    for (let attempt = 1; ; attempt++) {
      try {
        return (await releaseLeases(this.#options.sql, this.#options.tables, this.#options.names, this.owner)) > 0;
      } catch (error) {
        // A pooled connection that a blip reset fails the first try, and the next one gets a new
        // connection; a database that is gone fails them all, and a close() out of time drops the
        // connections (the tries then fail at once, as not retryable).
        if (isRetryable(error) && attempt < RELEASE_TRIES) {
          await pause(retryDelayMs(attempt, 100, 1_000));
          continue;
        }
        // Best effort: unreleased, the leases expire in their time.
        this.#options.logger.warn({ err: error }, 'releasing the workflow leases failed; they expire on their own');
        return false;
      }
    }
  }

  async #claim(): Promise<void> {
    const { sql, tables, names, ttlMs, isExclusive } = this.#options;
    const sentAt = performance.now();
    // Holding every name (or owning the database), a claim just renews; else it asks first which
    // names it can take, and claims only those with its own: a claim of a name held by a live
    // engine would only wait for that engine's flushes on the lease row, and hold up its next ones.
    const { claimable, endedHolders } =
      isExclusive || this.#epochs.size === names.length ? { claimable: names, endedHolders: [] } : await this.#claimable();
    const claimant = { owner: this.owner, processIdentity: this.#processIdentity, isExclusive, endedHolders };
    if (claimable.length > 0) this.#hasSentClaim = true;
    const claimed =
      claimable.length === 0 ? new Map<string, string>() : await claimLeases(sql, tables, claimable, claimant, ttlMs);
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
   * The registered names a claim can get now: those whose lease rows show this engine holding
   * them, those no one holds (no lease, or an expired one), and those whose holder ran on this
   * machine and has ended (a crash, a kill), which need not wait for expiry, as when this engine
   * restarts after being killed.
   * Nothing of an ended holder's can commit after the takeover: a flush it sent before dying
   * either locked the lease row first, and the takeover waits for it, or reaches its lease check
   * after the takeover and fails it.
   */
  async #claimable(): Promise<{ claimable: string[]; endedHolders: EndedHolder[] }> {
    const own = this.#processIdentity;
    const leases = new Map((await readLeases(this.#options.sql, this.#options.tables)).map((l) => [l.name, l]));
    const claimable: string[] = [];
    // By owner: whether its process has ended, and the process its rows named when read.
    const seenOwners = new Map<string, { hasEnded: boolean; process: string }>();
    for (const name of this.#options.names) {
      const lease = leases.get(name);
      // A name this engine held that the read shows another owner holding live is lost: not
      // claimed, so its holder's row is not touched (the claim's answer, lacking it, says so).
      if (!lease || lease.is_expired || lease.owner === this.owner) {
        claimable.push(name);
        continue;
      }
      const identity = lease.process_identity;
      // Written by the owner itself, not left by an earlier holder (see `#processIdentity`).
      if (own === undefined || identity === null || !identity.endsWith(` ${lease.owner}`)) continue;
      // Asked once per owner and pass: asked again while its process dies, the answer could
      // change midway, and two standbys would each take part of its names.
      let seen = seenOwners.get(lease.owner);
      if (seen === undefined) seenOwners.set(lease.owner, (seen = { hasEnded: await hasProcessEnded(identity, own), process: identity }));
      if (seen.hasEnded) claimable.push(name);
    }
    // The process read with each: if a row names another since (it cannot for a real engine,
    // whose identity is fixed), the claim leaves it to expire.
    const ended = [...seenOwners].filter(([, seen]) => seen.hasEnded).map(([owner, { process }]) => ({ owner, process }));
    if (ended.length > 0) {
      const message = 'taking over the leases of engines on this machine whose process has ended';
      this.#options.logger.info({ owners: ended.map((h) => h.owner) }, message);
    }
    return { claimable, endedHolders: ended };
  }
}
