/**
 * Messages an actor receives. Each names its source of truth in the database, so a message lost
 * with a crashed process or a failed flush is delivered again by recovery.
 */

import type { TaskRow } from '../storage/rows.js';
import type { SerializedFailure } from './history.js';

export type ActorMessage =
  /** Start the workflow (source: its `pending` row). */
  | { type: 'start' }
  /** An activity returned (source: its task row). `result` is JSON, undefined for no value. */
  | { type: 'activityCompleted'; commandId: number; result: string | undefined; attempts: number }
  /** An activity failed for good (source: its task row). */
  | { type: 'activityFailed'; commandId: number; failure: SerializedFailure; attempts: number }
  /** An attempt failed; `task` is the row moved to its next attempt and due time. */
  | { type: 'activityRetry'; commandId: number; task: TaskRow }
  /** A durable timer is due (source: its timer row). */
  | { type: 'timerFired'; commandId: number }
  /**
   * An external event (source: its inbox row). `unconsumedBefore`, on an event handed over as it
   * was sent, lists the workflow's events stored before it and not consumed then (null: too many
   * to list): one the actor has not taken yet was sent from elsewhere and must reach it first.
   */
  | { type: 'event'; inboxId: number; name: string; payload: string | undefined; unconsumedBefore?: readonly number[] | null };
