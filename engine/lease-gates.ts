import type { Logger } from '../storage/logger.js';
import type { TaskRow } from '../storage/rows.js';
import type { ActivityAttempts } from './activity-attempts.js';
import { HeldBackEffects } from './held-back-effects.js';
import type { LeaseKeeper } from './lease-keeper.js';
import { retryKey, type TimerPayload } from './timer-payload.js';
import type { TimerService } from './timer-service.js';

/**
 * Releases timers and activity attempts through the lease of their workflow's name (see
 * `LeaseKeeper.gate`): now if the lease lets this engine act; held back (HeldBackEffects) while it
 * is only overdue, until a renewal gets through; dropped if the name is not held.
 */
export class LeaseGates {
  readonly #leases: LeaseKeeper;
  readonly #timers: TimerService<TimerPayload>;
  readonly #attempts: ActivityAttempts;
  /** Carries out a fired timer the lease lets go. */
  readonly #fire: (payload: TimerPayload) => void;
  readonly #logger: Logger;
  readonly #heldBack = new HeldBackEffects<TimerPayload>();

  constructor(
    leases: LeaseKeeper,
    timers: TimerService<TimerPayload>,
    attempts: ActivityAttempts,
    fire: (payload: TimerPayload) => void,
    logger: Logger,
  ) {
    this.#leases = leases;
    this.#timers = timers;
    this.#attempts = attempts;
    this.#fire = fire;
    this.#logger = logger;
  }

  /** Effects held back. */
  get heldBack(): number {
    return this.#heldBack.size;
  }

  /**
   * Arms a timer if the lease of its workflow's name lets this engine act now; holds it back if
   * the lease is only overdue; drops it if the name is not held (see `LeaseKeeper.gate`).
   */
  arm(key: string, dueAt: number, payload: TimerPayload): void {
    if (payload.kind === 'retry') this.#heldBack.supersedeDispatch(key);
    const gate = this.#leases.gate(payload.workflowName);
    if (gate === 'release') this.#timers.arm(key, dueAt, payload);
    else if (gate === 'holdBack') this.#heldBack.arm({ key, dueAt, payload });
  }

  /** Disarms a timer, and cancels what is held back under its key (its arming, its firing, an attempt). */
  disarm(key: string): void {
    this.#timers.disarm(key);
    this.#heldBack.cancel(key);
  }

  /**
   * Dispatches an attempt, as `arm` arms a timer. One already running (a recovery found it again)
   * is not held back: by the release it would have ended, and its end decides what comes next.
   */
  dispatch(workflowName: string, task: TaskRow): void {
    const gate = this.#leases.gate(workflowName);
    if (gate === 'release') this.#attempts.start(workflowName, task);
    else if (gate === 'holdBack' && !this.#attempts.isRunning(task.workflowId, task.commandId)) {
      this.#heldBack.dispatch(retryKey(task.workflowId, task.commandId), { workflowName, task });
    }
  }

  /** Carries out a fired timer, as `arm` arms one: now, held back while the lease is overdue, or not at all. */
  fire(key: string, payload: TimerPayload): void {
    const gate = this.#leases.gate(payload.workflowName);
    if (gate === 'release') this.#fire(payload);
    else if (gate === 'holdBack') this.#heldBack.fire(key, payload);
  }

  /** Holds back a timer fired under `key` (its caller found the lease overdue). */
  holdBackFired(key: string, payload: TimerPayload): void {
    this.#heldBack.fire(key, payload);
  }

  /** Drops what is held back for the names lost (their new holder recovers them). */
  dropHeldBack(lost: ReadonlySet<string>): void {
    this.#heldBack.drop((name) => lost.has(name));
  }

  /** Releases, through the same gates, everything held back (what still may not go is held again). */
  releaseHeldBack(): void {
    const { arms, fires, dispatches } = this.#heldBack.takeAll();
    this.#logger.info({ effects: arms.length + fires.length + dispatches.length }, 'leases renewed again; releasing what was held back');
    for (const { key, dueAt, payload } of arms) this.arm(key, dueAt, payload);
    for (const [key, payload] of fires) this.fire(key, payload);
    for (const { workflowName, task } of dispatches) this.dispatch(workflowName, task);
  }
}
