/**
 * The activity attempts running now, by workflow and command id, so a task found again (by a poll
 * or recovery) while its attempt runs is not started twice. Keyed by the workflow id string the
 * task already holds, with the command id alone as the value in the usual case of one activity
 * at a time: no key string is built per step, and nothing per step outlives its attempt.
 */
export class InFlightTasks {
  readonly #byWorkflow = new Map<string, number | Set<number>>();

  /** Records the task as running; false if it already was. */
  add(workflowId: string, commandId: number): boolean {
    const running = this.#byWorkflow.get(workflowId);
    if (running === undefined) {
      this.#byWorkflow.set(workflowId, commandId);
      return true;
    }
    if (running === commandId) return false;
    if (typeof running === 'number') {
      this.#byWorkflow.set(workflowId, new Set([running, commandId]));
      return true;
    }
    if (running.has(commandId)) return false;
    running.add(commandId);
    return true;
  }

  /** Whether an attempt of the task runs now. */
  has(workflowId: string, commandId: number): boolean {
    const running = this.#byWorkflow.get(workflowId);
    return running === commandId || (typeof running === 'object' && running.has(commandId));
  }

  /** Records that the task's attempt ended (whatever its outcome). */
  delete(workflowId: string, commandId: number): void {
    const running = this.#byWorkflow.get(workflowId);
    if (running === commandId || (typeof running === 'object' && running.delete(commandId) && running.size === 0)) {
      this.#byWorkflow.delete(workflowId);
    }
  }
}
