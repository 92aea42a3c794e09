import type { TaskRow } from '../storage/rows.js';
import type { ArmedTimer } from './timer-service.js';

/** A held-back attempt: its task, and the workflow name whose lease it waits for. */
export interface HeldDispatch {
  workflowName: string;
  task: TaskRow;
}

/**
 * Side effects an engine may not release while its lease on their workflow name is overdue (no
 * renewal for its time to live: another engine may have taken the name): timers to arm and timers
 * that fired (by timer key), and activity attempts to dispatch (by retry key). Keyed, so cancelling
 * a timer or retry drops what is held of it, a retry supersedes the held attempt before it, and a
 * poll that finds the same due start again adds nothing. The engine takes them all back once a
 * renewal gets through, and releases each as if it came then.
 */
export class HeldBackEffects<Payload extends { workflowName: string }> {
  readonly #arms = new Map<string, ArmedTimer<Payload>>();
  readonly #fires = new Map<string, Payload>();
  readonly #dispatches = new Map<string, HeldDispatch>();

  /** Effects held. */
  get size(): number {
    return this.#arms.size + this.#fires.size + this.#dispatches.size;
  }

  arm(timer: ArmedTimer<Payload>): void {
    this.#arms.set(timer.key, timer);
  }

  fire(key: string, payload: Payload): void {
    this.#fires.set(key, payload);
  }

  dispatch(retryKey: string, held: HeldDispatch): void {
    this.#dispatches.set(retryKey, held);
  }

  /** A retry of the activity is armed: the attempt held before it must not run as well. */
  supersedeDispatch(retryKey: string): void {
    if (this.#dispatches.size > 0) this.#dispatches.delete(retryKey);
  }

  /** The timer or retry `key` is cancelled: nothing held of it may happen. */
  cancel(key: string): void {
    // Called for every disarm a committed step makes; almost always nothing is held.
    if (this.size === 0) return;
    this.#arms.delete(key);
    this.#fires.delete(key);
    this.#dispatches.delete(key);
  }

  /** Drops what is held for the names `isGone` accepts (their new holder recovers them). */
  drop(isGone: (workflowName: string) => boolean): void {
    for (const [key, { payload }] of this.#arms) if (isGone(payload.workflowName)) this.#arms.delete(key);
    for (const [key, payload] of this.#fires) if (isGone(payload.workflowName)) this.#fires.delete(key);
    for (const [key, { workflowName }] of this.#dispatches) if (isGone(workflowName)) this.#dispatches.delete(key);
  }

  /** Everything held, emptied out (what the caller may still not release, it holds again). */
  takeAll(): { arms: ArmedTimer<Payload>[]; fires: [string, Payload][]; dispatches: HeldDispatch[] } {
    const taken = { arms: [...this.#arms.values()], fires: [...this.#fires], dispatches: [...this.#dispatches.values()] };
    this.#arms.clear();
    this.#fires.clear();
    this.#dispatches.clear();
    return taken;
  }
}
