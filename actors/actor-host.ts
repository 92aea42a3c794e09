/**
 * What the actor layer needs from the engine that wires it. Actors never import the engine; the
 * engine hands them these services (data conversion, error classes, side-effect release).
 */

import type { Logger } from '../storage/logger.js';
import { NO_ITEMS } from '../storage/lists.js';
import type { StoredHistoryRow, TaskRow, TimerRow, WorkflowRow } from '../storage/rows.js';
import type { Wal } from '../storage/wal.js';
import type { SerializedFailure } from './history.js';
import type { ActorMessage } from './messages.js';
import type { WorkflowFunction } from './workflow-context.js';

/** Turns values into stored JSON and back; throws a typed error naming what was wrong. */
export interface Codec {
  /** JSON text of `value`, or undefined for `undefined`. `what` names the value in errors. */
  encode(value: unknown, what: string): string | undefined;
  decode(text: string | null | undefined): unknown;
  /** Checks activity options and returns the JSON stored with each task. */
  activityOptions(options: unknown): string;
  /** Checks a name workflow code passes (event, variable, activity); throws a typed error. */
  name(value: unknown, what: string): string;
  /** Checks an options object workflow code passes: an object with none but the `known` keys. */
  options(value: unknown, known: readonly string[], what: string): void;
  /** Largest payload, in UTF-8 bytes of JSON. */
  readonly maxPayloadBytes: number;
  /** UTF-8 bytes of `text`. */
  byteLength(text: string): number;
  /** Throws a typed error if `bytes` of JSON are more than a payload may be. */
  checkBytes(bytes: number, what: string): void;
}

/** The errors workflow code sees, built by the engine so their classes are the public ones. */
export interface WorkflowErrors {
  activityFailure(activityName: string, attempts: number, failure: SerializedFailure): Error;
  timeout(message: string): Error;
  nonDeterminism(
    workflowId: string,
    activation: number,
    commandId: number | null,
    expected: string,
    got: string,
  ): Error;
  /** A row of the workflow's history whose payload replay cannot read (see `payloadOf`). */
  unreadableHistory(workflowId: string, seq: number, eventType: string, cause: Error): Error;
  /**
   * The workflow's stored input cannot be decoded: duraflow encoded it at the start, so it was
   * changed by hand, say.
   */
  unreadableInput(workflowId: string, cause: Error): Error;
  /** An event's stored payload cannot be decoded (its inbox row was changed by hand, say). */
  unreadableEvent(workflowId: string, eventName: string, cause: Error): Error;
  /** Plain-JSON form of anything thrown. */
  toFailure(error: unknown): SerializedFailure;
}

/** An activity's failure for good, as a step records it. */
export interface FailedActivity {
  activityName: string;
  failure: SerializedFailure;
}

/** Side effects of one committed step, released by the engine after the commit. */
export interface Effects {
  /** Activities to run now. */
  dispatch: readonly TaskRow[];
  /** Activities whose next attempt waits until `visibleAt`. */
  retries: readonly TaskRow[];
  armTimers: readonly TimerRow[];
  /** Timers (by command id) no longer awaited. */
  disarmTimers: readonly number[];
  /** Activities (by command id) no longer awaited, whose retry may be armed. */
  disarmRetries: readonly number[];
  /** Activities whose failure for good the step records (its ActivityFailed event). */
  failures: readonly FailedActivity[];
  /** Set when the step started the workflow. */
  isStarted: boolean;
  /** Set when the step ended the workflow; `startedAt` is its first step's time (epoch ms). */
  finished?: { status: 'completed' | 'failed'; result: string | null; error: string | null; startedAt: number };
  /** The workflow's name (a metrics label). */
  workflowName: string;
  /**
   * For a step (an activation), when its first message reached the mailbox (performance.now());
   * undefined for writes that are not steps.
   */
  receivedAt: number | undefined;
}

/** An empty set of effects. */
export function noEffects(workflowName: string): Effects {
  return {
    // Shared until a first item: most steps have only some of these.
    dispatch: NO_ITEMS,
    retries: NO_ITEMS,
    armTimers: NO_ITEMS,
    disarmTimers: NO_ITEMS,
    disarmRetries: NO_ITEMS,
    failures: NO_ITEMS,
    isStarted: false,
    workflowName,
    receivedAt: undefined,
  };
}

/** Observations the actor layer reports (metrics, logs). */
export interface ActorObserver {
  /** A workflow was parked by a NonDeterminismError: called once its parking is stored. */
  parked(workflowId: string, error: Error): void;
  rehydrated(workflowId: string, events: number, seconds: number): void;
  evicted(workflowId: string): void;
}

/** The engine, as the actors see it. */
export interface ActorHost {
  readonly wal: Wal;
  readonly codec: Codec;
  readonly errors: WorkflowErrors;
  readonly logger: Logger;
  readonly observer: ActorObserver;
  /** The workflow's stored row, or undefined if there is none: what a rebuilt actor starts from. */
  loadWorkflow(workflowId: string): Promise<WorkflowRow | undefined>;
  /** The workflow's stored history in seq order, which a rebuilt actor replays. */
  loadHistory(workflowId: string): Promise<StoredHistoryRow[]>;
  /** The registered function for `name`, if this engine runs it. */
  workflow(name: string): WorkflowFunction | undefined;
  /** Called after the step behind `effects` committed. */
  release(workflowId: string, effects: Effects): void;
  /**
   * Called when an actor failed (loading, replaying or running a step) and was dropped: the
   * engine rebuilds it from the database, after a growing pause if it keeps failing.
   * `unprocessed` are the messages it had not processed: the database has their sources, except
   * for the outcomes of activity attempts, which the engine keeps for the rebuilt actor.
   */
  rebuild(workflowId: string, unprocessed?: readonly ActorMessage[]): void;
  /** Delivers the workflow's unconsumed events again (an actor that let some go before its start). */
  readInbox(workflowId: string): void;
}
