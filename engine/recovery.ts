import { EventType } from '../actors/history.js';
import type { ActorMessage } from '../actors/messages.js';
import { pause, retryDelayMs } from '../storage/backoff.js';
import type { Logger } from '../storage/logger.js';
import type { TaskRow, WorkflowRow } from '../storage/rows.js';
import type { Sql, Tables } from '../storage/sql.js';
import { type DeliverableEvent, firstEventsOfParked, inboxFor } from '../storage/sql/inbox.js';
import { pendingTasks } from '../storage/sql/tasks.js';
import { timersFor } from '../storage/sql/timers.js';
import { dueStarts } from '../storage/sql/workflows.js';
import { UnreadableHistoryError } from './errors.js';
import type { LeaseKeeper } from './lease-keeper.js';
import { type RecoveryScope, RecoveriesUnderWay } from './recoveries-under-way.js';
import { retryKey, timerKey, type TimerPayload } from './timer-payload.js';
import { type OutcomesByWorkflow, outcomeEnding, type UnstoredOutcomes } from './unstored-outcomes.js';

/** The message that hands an inbox event to its workflow's actor. */
export function eventMessage(e: DeliverableEvent): ActorMessage {
  return { type: 'event', inboxId: e.id, name: e.name, payload: e.payload };
}

/** Rows read per recovery query. */
export const RECOVERY_BATCH = 10_000;

/** What a recovery does with the unfinished work it reads: the engine's deliveries and lease gates. */
export interface RecoveryTarget {
  /** Starts found due, or due before the next polls. */
  handleStarts(rows: WorkflowRow[], now: number): void;
  deliver(workflowId: string, message: ActorMessage): void;
  /** Delivers a start or an activity outcome once the actors in memory leave room for it. */
  deliverWhenRoom(workflowId: string, message: ActorMessage): void;
  /** Dispatches an attempt, or holds it back, as the lease of its name lets the engine. */
  dispatch(workflowName: string, task: TaskRow): void;
  /** Arms a timer, or holds it back, as the lease of its name lets the engine. */
  arm(key: string, dueAt: number, payload: TimerPayload): void;
  /** Fires a timer that came due, as the timer armed under `key` would have. */
  fire(key: string, dueAt: number, payload: TimerPayload): void;
  /** Rebuilds the workflow's actor (with the growing pause). */
  rebuild(workflowId: string): void;
  requestPoll(): void;
}

export interface RecoveryDeps {
  sql: Sql;
  tables: Tables;
  leases: LeaseKeeper;
  logger: Logger;
  /** Starts due before two polls from now are recovered too (see `EngineOptions.pollIntervalMs`). */
  pollIntervalMs: number;
  /** Outcomes of attempts no actor stored, which the rebuilds of their workflows take. */
  unstoredOutcomes: UnstoredOutcomes;
  isClosing(): boolean;
  target: RecoveryTarget;
}

/**
 * Re-delivers what the database says is unfinished: at the start, for names gained, for the
 * workflows of a failed flush, for an actor rebuilt. Each recovery is tried again with backoff
 * until it succeeds or the engine closes, and counted under way until then: the events of the
 * workflows it covers wait for it (the inbox reads leave them, events sent here are held), as it
 * fires the timers that came due in time order with the events it reads.
 */
export class Recovery {
  readonly #deps: RecoveryDeps;
  readonly #target: RecoveryTarget;
  /**
   * Recoveries under way (settled promises, never rejected), each with the workflows it covers:
   * their events wait for it (see the engine's #pollInbox); other workflows' events are delivered meanwhile.
   */
  readonly #recoveries = new RecoveriesUnderWay();
  /** An event was left in the inbox for a recovery under way: poll once it settles. */
  #pollAfterRecovery = false;
  /**
   * Events sent through this engine to workflows a recovery under way covers, by workflow, in the
   * order sent: delivered once no recovery covers the workflow, and before any sent after them.
   */
  readonly #eventsAfterRecovery = new Map<string, { workflowName: string; events: ActorMessage[] }>();
  /** Aborted the moment close() is called: it ends the pauses between recovery attempts. */
  readonly #closeCalled = new AbortController();

  constructor(deps: RecoveryDeps) {
    this.#deps = deps;
    this.#target = deps.target;
  }

  /** Re-delivers everything unfinished for the names held; not tried again if it fails. */
  recoverHeld(): Promise<void> {
    return this.#underWay(this.#recover(this.#deps.leases.held, undefined), {});
  }

  /**
   * Recovers the names held among `names` (default: all held), or only `workflowIds` of them,
   * trying again with backoff until it succeeds or the engine closes.
   */
  recoverWithRetry({ names, workflowIds }: { names?: string[]; workflowIds?: string[] }): Promise<void> {
    // Taken now, as the pause (if any) ends: those that come later wait for a later rebuild.
    const unstoredOutcomes = workflowIds && this.#deps.unstoredOutcomes.take(workflowIds);
    // Under way until an attempt succeeds, pauses included: an inbox read let through between two
    // attempts would deliver events before the due timers the next attempt fires.
    return this.#underWay(this.#retryRecovery(names, workflowIds, unstoredOutcomes), { names, workflowIds });
  }

  /** close() was called: the pauses between attempts end, and no attempt follows. */
  closeCalled(): void {
    this.#closeCalled.abort();
  }

  /** Resolves once every recovery under way now has settled. */
  settled(): Promise<void> {
    return this.#recoveries.settled();
  }

  /**
   * Holds `event`, sent through this engine, if a recovery under way covers its workflow or
   * events sent before it are held; false if it may be delivered now.
   */
  holdEvent(workflowId: string, workflowName: string, event: ActorMessage): boolean {
    // A recovery under way fires the timers that came due in time order with the events it
    // reads: delivered now, this one could overtake them. Held until it ends (the recovery may
    // deliver it first, read from the inbox: the workflow takes it once), and so are the events
    // sent after it, which would otherwise overtake it.
    const held = this.#eventsAfterRecovery.get(workflowId);
    if (held) held.events.push(event);
    else if (this.covers(workflowName, workflowId)) {
      this.#eventsAfterRecovery.set(workflowId, { workflowName, events: [event] });
    } else {
      return false;
    }
    return true;
  }

  /**
   * The names among `names` whose events an inbox read may deliver now: those a recovery under
   * way covers whole are not read (their events would only be left, and, more of them than one
   * read takes, would keep the other names' events out of every read).
   */
  namesToRead(names: string[]): string[] {
    if (this.#recoveries.size === 0) return names;
    const read = names.filter((name) => !this.#recoveries.coversName(name));
    if (read.length < names.length) {
      this.#pollAfterRecovery = true;
      this.#deps.logger.debug({ names: names.length - read.length }, 'the events of these names left to the recoveries under way');
    }
    return read;
  }

  /** Whether a recovery under way covers the workflow (and so delivers its events itself). */
  covers(workflowName: string, workflowId: string): boolean {
    return this.#recoveries.size > 0 && this.#recoveries.covers(workflowName, workflowId);
  }

  /** An inbox read left `count` events to the recoveries under way: poll once they settle. */
  leftEvents(count: number): void {
    this.#pollAfterRecovery = true;
    this.#deps.logger.debug({ events: count }, 'events left to the recoveries under way');
  }

  /** Counts `recovery` of `scope` under way until it settles (see #recoveries), and passes its outcome on. */
  async #underWay(recovery: Promise<void>, scope: RecoveryScope): Promise<void> {
    this.#recoveries.add(recovery, scope);
    try {
      await recovery;
    } finally {
      // No longer counted (see RecoveriesUnderWay.add).
      this.#deps.logger.debug({ recoveries: this.#recoveries.size }, 'a recovery ended');
      for (const [workflowId, { workflowName, events }] of this.#eventsAfterRecovery) {
        if (this.#recoveries.covers(workflowName, workflowId)) continue;
        this.#eventsAfterRecovery.delete(workflowId);
        for (const event of events) this.#target.deliver(workflowId, event);
      }
      if (this.#pollAfterRecovery) {
        this.#pollAfterRecovery = false;
        this.#target.requestPoll();
      }
    }
  }

  /** The work of recoverWithRetry; never rejects. */
  async #retryRecovery(names: string[] | undefined, workflowIds: string[] | undefined, unstoredOutcomes?: OutcomesByWorkflow): Promise<void> {
    const { leases, logger } = this.#deps;
    for (let attempt = 1; !this.#deps.isClosing(); attempt++) {
      try {
        const held = names ? names.filter((name) => leases.holds(name)) : leases.held;
        await this.#recover(held, workflowIds, unstoredOutcomes);
        return;
      } catch (error) {
        logger.warn({ err: error, attempt }, 'recovery failed; retrying');
        // Cut short by close(), which waits for this recovery.
        await pause(retryDelayMs(attempt, 100, 5_000), this.#closeCalled.signal);
      }
    }
  }

  /**
   * Re-delivers what the database says is unfinished for `names` (and, if given, `workflowIds`
   * only); an activity whose stored attempt ended, as `unstoredOutcomes` has it, gets that
   * outcome instead of running the attempt again. Callers count it under way (#underWay), so
   * the events of the workflows it covers wait for it.
   */
  async #recover(names: string[], workflowIds: string[] | undefined, unstoredOutcomes?: OutcomesByWorkflow): Promise<void> {
    if (names.length === 0) return;
    const { sql, tables, logger } = this.#deps;
    const target = this.#target;
    const now = Date.now();
    const [starts, timers, tasks, events] = await Promise.all([
      dueStarts(sql, tables, names, now + this.#deps.pollIntervalMs * 2, RECOVERY_BATCH, workflowIds),
      timersFor(sql, tables, names, workflowIds),
      pendingTasks(sql, tables, names, workflowIds, (workflowId, seq, cause) => {
        // Not run: its workflow cannot take its outcome either, as replay fails on the same row.
        const error = new UnreadableHistoryError(workflowId, seq, EventType.ActivityScheduled, cause);
        logger.error({ err: error, workflowId }, 'an unfinished activity cannot be read; it is not run');
        // Nothing else would read the row again (no outcome will come, and a workflow rebuilt
        // later does not dispatch what it awaits): rebuilds with the growing pause look until
        // it is repaired.
        target.rebuild(workflowId);
      }),
      inboxFor(sql, tables, names, workflowIds, RECOVERY_BATCH),
    ]);
    if (this.#deps.isClosing()) return;
    target.handleStarts(starts, now);
    for (const { task, workflowName } of tasks) {
      const outcome = outcomeEnding(unstoredOutcomes, task);
      if (outcome) {
        // The rebuilt actor stores it (and arms a retry), as the actor that failed would have.
        target.deliverWhenRoom(task.workflowId, outcome);
        continue;
      }
      if (task.visibleAt <= now) target.dispatch(workflowName, task);
      else target.arm(retryKey(task.workflowId, task.commandId), task.visibleAt, { kind: 'retry', workflowName, task });
    }
    // Timers that came due while no engine ran them fire in time order with the events sent
    // meanwhile, as they would have with an engine running: an event sent before a wait timed out
    // takes the wait, one sent after it does not. (Armed, a due timer would fire only after them.)
    // Timers come ordered by dueAt: the first `dueCount` are due now, the rest are armed.
    const due = timers.findIndex((t) => t.dueAt > now);
    const dueCount = due < 0 ? timers.length : due;
    let next = 0;
    const fireDueBy = (at: number): void => {
      for (; next < dueCount && timers[next]!.dueAt <= at; next++) {
        const { workflowId, workflowName, commandId, dueAt } = timers[next]!;
        target.fire(timerKey(workflowId, commandId), dueAt, { kind: 'timer', workflowId, workflowName, commandId });
      }
    };
    for (let page = events; ; ) {
      for (const e of page) {
        fireDueBy(e.createdAt);
        this.#deliverEvent(e);
      }
      // A full read may have left out events sent before timers still to fire: read on, or the
      // timers would fire before them (the polls deliver the rest, after).
      if (page.length < RECOVERY_BATCH || next >= dueCount) break;
      page = await inboxFor(sql, tables, names, workflowIds, RECOVERY_BATCH, page.at(-1)!.id);
      if (this.#deps.isClosing()) return;
    }
    fireDueBy(now);
    for (; next < timers.length; next++) {
      const { workflowId, workflowName, commandId, dueAt } = timers[next]!;
      target.arm(timerKey(workflowId, commandId), dueAt, { kind: 'timer', workflowId, workflowName, commandId });
    }
    // Parked workflows with events come back too: code that matches their history may run them on.
    for (const e of await firstEventsOfParked(sql, tables, names, workflowIds)) this.#deliverEvent(e);
  }

  #deliverEvent(e: DeliverableEvent): void {
    this.#target.deliver(e.workflowId, eventMessage(e));
  }
}
