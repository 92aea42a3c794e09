import type { WorkflowErrors } from '../actors/actor-host.js';
import { ActivityFailure, NonDeterminismError, TimeoutError, UnreadableHistoryError, UnreadableStateError } from './errors.js';
import { fromFailure, toFailure } from './failure.js';

/** The errors workflow code sees, built from the public classes (the actors cannot import them). */
export const workflowErrors: WorkflowErrors = {
  activityFailure: (name, attempts, failure) => new ActivityFailure(name, attempts, fromFailure(failure)),
  timeout: (message) => new TimeoutError(message),
  nonDeterminism: (workflowId, activation, commandId, expected, got) =>
    new NonDeterminismError(workflowId, activation, commandId, expected, got),
  unreadableHistory: (workflowId, seq, eventType, cause) => new UnreadableHistoryError(workflowId, seq, eventType, cause),
  unreadableInput: (workflowId, cause) => new UnreadableStateError(workflowId, 'input', cause),
  unreadableEvent: (workflowId, eventName, cause) =>
    new UnreadableStateError(workflowId, 'queuedEvents.payload', cause, `event ${JSON.stringify(eventName)}`),
  toFailure,
};
