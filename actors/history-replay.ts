import type { StoredHistoryRow } from '../storage/rows.js';
import type { WorkflowErrors } from './actor-host.js';
import { type CommandIdentity, describeIdentity, identityOf } from './commands.js';
import { drainWorkflowCode } from './drain-workflow-code.js';
import { EventRoutingChangedError } from './event-routing-changed-error.js';
import { EventType, payloadOf, type SerializedFailure } from './history.js';
import { type ReplayState, UnknownCommandError } from './replay-state.js';

const INBOUND_TYPES: ReadonlySet<string> = new Set([
  EventType.WorkflowStarted,
  EventType.ActivityCompleted,
  EventType.ActivityFailed,
  EventType.TimerFired,
  EventType.EventReceived,
]);

/** A recorded command: what replay compares, and when a timer or a wait's timeout was due. */
interface RecordedCommand extends CommandIdentity {
  dueAt?: number | undefined;
}

function recordedCommand(row: StoredHistoryRow, payload: Record<string, unknown>): RecordedCommand {
  switch (row.type) {
    case EventType.ActivityScheduled:
      return { commandId: row.command_id, kind: 'scheduleActivity', name: String(payload.activityName) };
    case EventType.TimerStarted:
      return { commandId: row.command_id, kind: 'startTimer', name: '', dueAt: payload.dueAt as number };
    case EventType.EventWaitStarted:
      return { commandId: row.command_id, kind: 'waitEvent', name: String(payload.eventName), dueAt: payload.timeoutAt as number | undefined };
    case EventType.WorkflowCompleted:
      return { commandId: null, kind: 'completeWorkflow', name: '' };
    default:
      return { commandId: null, kind: 'failWorkflow', name: '' };
  }
}

function sameIdentity(a: CommandIdentity, b: CommandIdentity): boolean {
  return a.commandId === b.commandId && a.kind === b.kind && a.name === b.name;
}

/**
 * The actor a history is replayed into. Its callbacks run at the points of the replay where the
 * actor acts on what it found, so nothing else runs in between.
 */
export interface ReplayTarget {
  readonly workflowId: string;
  readonly errors: WorkflowErrors;
  /**
   * Calls the workflow function as its recorded start at `at` did; an input that cannot be
   * decoded throws, and fails the load as an unreadable row does.
   */
  begin(at: number): ReplayState;
  /** The history took the inbox row `inboxId`. */
  consumed(inboxId: number): void;
  /** Whether the actor was killed meanwhile (while the code ran). */
  isKilled(): boolean;
  /** The activation `activation` matched its history. */
  matched(activation: number): void;
  /** The code no longer matches its history: what the recorded run did, and what the code does. */
  park(activation: number, commandId: number | null, expected: string, got: string): void;
  /** Every activation matched: `rs` runs on live from here. */
  replayed(rs: ReplayState): void;
}

/**
 * Replays `rows` (a whole history, in seq order) into `target`, activation by activation, in the
 * recorded batches, comparing the commands the code emits with the recorded ones. An unreadable
 * row throws the typed error naming it.
 */
export async function replayHistory(rows: StoredHistoryRow[], target: ReplayTarget): Promise<void> {
  let rs: ReplayState | undefined;
  let i = 0;
  while (i < rows.length) {
    const activation = rows[i]!.activation;
    const recorded: RecordedCommand[] = [];
    const firstAt = rows[i]!.at.getTime();
    if (rs) rs.now = firstAt;
    for (; i < rows.length && rows[i]!.activation === activation; i++) {
      const row = rows[i]!;
      // Unreadable, the row fails the load (see WorkflowActor's #load) as the typed error naming
      // it: nothing stored is touched, and the rebuilds back off until the row is repaired.
      const payload = payloadOf(row, target.workflowId, target.errors);
      if (!INBOUND_TYPES.has(row.type)) {
        recorded.push(recordedCommand(row, payload));
        continue;
      }
      try {
        rs = applyRecorded(target, rs, row, payload, firstAt);
      } catch (error) {
        if (error instanceof EventRoutingChangedError) {
          target.park(activation, error.commandId, error.expected, error.got);
          return;
        }
        if (!(error instanceof UnknownCommandError)) throw error;
        const got = `${row.type} for command #${error.commandId}, which the code did not issue`;
        target.park(activation, error.commandId, 'a pending command', got);
        return;
      }
    }
    if (!rs) {
      target.park(activation, null, EventType.WorkflowStarted, `history starting with ${rows[0]!.type}`);
      return;
    }
    await drainWorkflowCode();
    if (target.isKilled()) return;
    const emitted = rs.takeCommands().map(identityOf);
    const length = Math.max(emitted.length, recorded.length);
    for (let k = 0; k < length; k++) {
      const expected = recorded[k];
      const got = emitted[k];
      if (expected && got && sameIdentity(expected, got)) {
        if (expected.kind === 'startTimer' || expected.kind === 'waitEvent') rs.keepRecordedDue(expected.commandId!, expected.dueAt);
        continue;
      }
      target.park(
        activation,
        expected?.commandId ?? got?.commandId ?? null,
        describeIdentity(expected),
        describeIdentity(got),
      );
      return;
    }
    target.matched(activation);
  }
  if (!rs) {
    target.park(0, null, EventType.WorkflowStarted, 'an empty history');
    return;
  }
  rs.isReplaying = false;
  rs.isInStep = false;
  rs.takeChangedVars();
  target.replayed(rs);
}

function applyRecorded(
  target: ReplayTarget,
  rs: ReplayState | undefined,
  row: StoredHistoryRow,
  payload: Record<string, unknown>,
  at: number,
): ReplayState {
  if (row.type === EventType.WorkflowStarted) return target.begin(at);
  if (!rs) throw new UnknownCommandError(row.command_id ?? 0, row.type);
  const commandId = row.command_id ?? 0;
  switch (row.type) {
    case EventType.ActivityCompleted:
      rs.resolveActivity(commandId, payload.result);
      break;
    case EventType.ActivityFailed:
      rs.rejectActivity(commandId, payload.attempts as number, payload.failure as SerializedFailure);
      break;
    case EventType.TimerFired:
      rs.fireTimer(commandId);
      break;
    case EventType.EventReceived: {
      target.consumed(payload.inboxId as number);
      const name = payload.eventName as string;
      const { waiter } = rs.deliverEvent(name, payload.payload);
      // Which wait took the event is recorded: code that hands it to another one has changed.
      const resolved = payload.resolves as number | undefined;
      if (waiter !== resolved) throw new EventRoutingChangedError(name, resolved, waiter);
      break;
    }
  }
  return rs;
}
