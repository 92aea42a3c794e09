/**
 * Commands: what workflow code asks for during one activation. The actor turns each into a
 * history event plus rows and side effects; replay compares them with the recorded ones.
 */

import type { SerializedFailure } from './history.js';

/**
 * How an activity is retried. Every field is optional; unset fields come from the engine's
 * default policy.
 */
export interface RetryPolicy {
  /** Attempts in all, the first included. @default Infinity (retry until success) */
  maxAttempts?: number | undefined;
  /** Delay before the second attempt, in milliseconds. @default 1000 */
  initialIntervalMs?: number | undefined;
  /** Each further delay is the previous one times this. @default 2 */
  backoffCoefficient?: number | undefined;
  /** Cap on the delay between attempts, in milliseconds. @default 60000 */
  maxIntervalMs?: number | undefined;
  /** Error names (`error.name`) that fail the activity at once. @default [] */
  nonRetryable?: string[] | undefined;
}

/** Options a workflow passes with its activity calls; stored with each task as JSON. */
export interface ActivityOptions {
  /** Overrides the engine's default retry policy, field by field. */
  retry?: RetryPolicy | undefined;
  /**
   * Longest one attempt may run, in milliseconds: then its `ctx.signal` is aborted and the
   * attempt counts as failed (and is retried by the policy). @default no limit
   */
  startToCloseTimeoutMs?: number | undefined;
}

export type Command =
  | {
      kind: 'scheduleActivity';
      commandId: number;
      name: string;
      /** JSON of the input, undefined for no input. */
      input: string | undefined;
      /** JSON of the checked ActivityOptions. */
      options: string;
    }
  | { kind: 'startTimer'; commandId: number; dueAt: number }
  | { kind: 'waitEvent'; commandId: number; name: string; timeoutAt: number | undefined }
  | { kind: 'completeWorkflow'; result: string | undefined }
  | { kind: 'failWorkflow'; failure: SerializedFailure };

/** The fields replay compares: a command is the same if these match. */
export interface CommandIdentity {
  commandId: number | null;
  kind: Command['kind'];
  name: string;
}

/** The identity of a live command. */
export function identityOf(command: Command): CommandIdentity {
  switch (command.kind) {
    case 'scheduleActivity':
    case 'waitEvent':
      return { commandId: command.commandId, kind: command.kind, name: command.name };
    case 'startTimer':
      return { commandId: command.commandId, kind: command.kind, name: '' };
    default:
      return { commandId: null, kind: command.kind, name: '' };
  }
}

/** Human-readable form for error messages: `scheduleActivity #3 charge`. */
export function describeIdentity(identity: CommandIdentity | undefined): string {
  if (!identity) return 'nothing';
  const id = identity.commandId === null ? '' : ` #${identity.commandId}`;
  return `${identity.kind}${id}${identity.name ? ` ${identity.name}` : ''}`;
}
