import type { WorkflowActor } from './workflow-actor.js';

/** What a workflow actor tells the registry that keeps it in memory (see ActorSystem). */
export interface ActorOwner {
  /** The actor stopped for good (a failed load or flush, a refused creation). */
  dropped(actor: WorkflowActor): void;
  /**
   * The actor went idle after a batch that wrote nothing (a finished or parked workflow's actor
   * brought in by a late message, say): no commit will say that it may give way to a workflow
   * waiting for room.
   */
  idleWithoutWrite(actor: WorkflowActor): void;
}
