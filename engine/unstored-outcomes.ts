import type { ActorMessage } from '../actors/messages.js';
import type { TaskRow } from '../storage/rows.js';
import type { AttemptOutcome } from './activity-attempts.js';

/** The attempt whose end `message` reports. */
const endedAttemptOf = (message: AttemptOutcome): number =>
  message.type === 'activityRetry' ? message.task.attempt - 1 : message.attempts;

/** Outcomes of attempts no actor stored, by workflow, then command. */
export type OutcomesByWorkflow = Map<string, Map<number, AttemptOutcome>>;

/**
 * The outcome among `outcomes` of the stored attempt of `task`, or of a later one: the rebuilt
 * actor takes it in place of running that attempt again.
 */
export function outcomeEnding(outcomes: OutcomesByWorkflow | undefined, task: TaskRow): AttemptOutcome | undefined {
  const outcome = outcomes?.get(task.workflowId)?.get(task.commandId);
  return outcome && endedAttemptOf(outcome) >= task.attempt ? outcome : undefined;
}

/**
 * Outcomes of attempts that no actor stored (results, retries, final failures): they came
 * while their workflow was paused for a rebuild, or its actor failed before taking them, or the
 * flush of the step that took them failed. Unlike
 * what else is dropped then, the database does not have them; the rebuild's recovery hands them
 * to the rebuilt actor in place of the attempt the database still shows, so the attempt count
 * and the backoff go on, and an attempt that ended is not run again (at every rebuild, while a
 * history row cannot be read). By workflow, then command: a rebuild takes its workflow's
 * without scanning everyone's, after an outage paused thousands. Each waits for a rebuild of its
 * workflow, so none stays longer than that.
 */
export class UnstoredOutcomes {
  readonly #byWorkflow: OutcomesByWorkflow = new Map();

  /** Keeps `message` for the workflow's rebuild if it reports how an attempt ended. */
  keep(workflowId: string, message: ActorMessage): void {
    if (message.type !== 'activityCompleted' && message.type !== 'activityRetry' && message.type !== 'activityFailed') return;
    let ofWorkflow = this.#byWorkflow.get(workflowId);
    if (!ofWorkflow) this.#byWorkflow.set(workflowId, (ofWorkflow = new Map()));
    const kept = ofWorkflow.get(message.commandId);
    // Two attempts' outcomes (a recovery ran one again): the later attempt wins.
    if (!kept || endedAttemptOf(kept) <= endedAttemptOf(message)) ofWorkflow.set(message.commandId, message);
  }

  /** Keeps, of `messages`, those that report how an attempt ended. */
  keepAll(workflowId: string, messages: readonly ActorMessage[]): void {
    for (const message of messages) this.keep(workflowId, message);
  }

  /** Takes the outcomes kept for `workflowIds`. */
  take(workflowIds: readonly string[]): OutcomesByWorkflow | undefined {
    if (this.#byWorkflow.size === 0) return undefined;
    const taken: OutcomesByWorkflow = new Map();
    for (const workflowId of workflowIds) {
      const ofWorkflow = this.#byWorkflow.get(workflowId);
      if (!ofWorkflow) continue;
      this.#byWorkflow.delete(workflowId);
      taken.set(workflowId, ofWorkflow);
    }
    return taken;
  }
}
