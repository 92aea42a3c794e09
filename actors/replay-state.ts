import { appended, NO_ITEMS } from '../storage/lists.js';
import type { Codec, WorkflowErrors } from './actor-host.js';
import type { Command } from './commands.js';
import { Fifo } from './fifo.js';
import type { SerializedFailure } from './history.js';
import { PendingCommands } from './pending-commands.js';

type Completion =
  | { kind: 'activity'; name: string; resolve: (value: unknown) => void; reject: (error: Error) => void; promise?: Promise<unknown> }
  | { kind: 'timer'; dueAt: number; resolve: () => void }
  | {
      kind: 'event';
      name: string;
      timeoutAt: number | undefined;
      resolve: (value: unknown) => void;
      reject: (error: Error) => void;
      promise?: Promise<unknown>;
    };

/** What a pending command waits on, for `inspect`. */
export interface Outstanding {
  activities: { commandId: number; name: string }[];
  timers: { commandId: number; dueAt: number }[];
  events: { commandId: number; name: string; timeoutAt: number | undefined }[];
}

/**
 * A ctx call that emits no command but changes what the workflow's later steps see (a variable,
 * the random sequence, who takes the events, the kept events), made while no step runs: replay
 * could not make it at the same point either.
 */
export interface StateChange {
  kind: 'stateChange';
  method: 'setVar' | 'random' | 'onEvent' | 'waitForEvent';
  /** The variable's or the event's name; empty for `random`. */
  name: string;
}

/** What workflow code asked of ctx while no step ran. */
export type StrayCall = Command | StateChange;

/** Returns a PRNG (mulberry32) seeded from the FNV-1a hash of `seed`. */
function seededRandom(seed: string): () => number {
  let h = 0x811c9dc5;
  for (let i = 0; i < seed.length; i++) {
    h ^= seed.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  let a = h >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const isActivity = (c: Completion): boolean => c.kind === 'activity';

const noop = (): void => undefined;

/**
 * Rejects what workflow code may await only later (`const b = pay(); await a; await b`), and marks
 * it handled at once, so that the rejection meanwhile is not an unhandled rejection, which would
 * end the engine's process. On replay the same code reaches its `await` in time, so without this a
 * live run and its replay would differ too. Awaiting it still throws. (Only the rejection pays for
 * the handler, not every call.)
 */
function rejectHandled(completion: { reject: (error: Error) => void; promise?: Promise<unknown> }, error: Error): void {
  completion.reject(error);
  completion.promise?.catch(noop);
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === 'function';
}

/**
 * The in-memory state of one workflow run between activations: the command counter, the promises
 * workflow code awaits (by command id), event routing, and user variables. Workflow code reaches
 * it through the WorkflowContext; the actor feeds it inbound events and takes the commands.
 *
 * The same object serves replay and live execution: replay feeds recorded events, live feeds
 * messages, and both compare or record the commands that come out.
 */
export class ReplayState {
  readonly #codec: Codec;
  readonly #errors: WorkflowErrors;
  readonly #random: () => number;
  #nextCommandId = 1;
  // Between activations, the shared empty list: a workflow waiting out a step holds none of its own.
  #commands: readonly Command[] = NO_ITEMS;
  readonly #pending = new PendingCommands<Completion>();
  // Created on first use: a sleeping workflow's state should be small (many are kept in memory).
  #waiters: Map<string, Fifo<number>> | undefined;
  #buffered: Map<string, Fifo<unknown>> | undefined;
  /**
   * Kept events being handed to the handler that just registered for them, by name: `handed` of
   * them so far, and `claimed` by the waits their handlers started (see `onEvent`).
   */
  #handingOut: Map<string, { events: unknown[]; handed: number; claimed: number }> | undefined;
  #handlers: Map<string, ((payload: unknown) => unknown)[]> | undefined;
  #vars: Map<string, string> | undefined;
  /** Length of the variables' values (their JSON), together. */
  #valueChars = 0;
  /**
   * UTF-8 bytes of the variables' values together, counted from the first change that could
   * bring them near the limit (see `setVar`), and undefined before.
   */
  #valueBytes: number | undefined;
  #isVarsChanged = false;
  #isTerminal = false;
  /** Time of the current activation (epoch ms): `ctx.now()`. */
  now = 0;
  isReplaying = false;
  /**
   * Whether a step runs (its messages are applied or its code drains): the actor clears it once it
   * took the step's commands, and sets it again at the next step.
   */
  isInStep = true;
  /**
   * Called instead of buffering a command workflow code emits, or of making a change it asks for,
   * while no step runs (it awaited something that is not a ctx command): no step would ever record
   * it, and replay could not reproduce it.
   */
  onStray: ((call: StrayCall) => void) | undefined;

  constructor(workflowId: string, codec: Codec, errors: WorkflowErrors) {
    this.#codec = codec;
    this.#errors = errors;
    this.#random = seededRandom(workflowId);
  }

  /** Whether the workflow has emitted its completion or failure. */
  get isTerminal(): boolean {
    return this.#isTerminal;
  }

  /** Whether the workflow awaits an activity (its result comes back on its own, usually soon). */
  awaitsActivity(): boolean {
    return this.#pending.some(isActivity);
  }

  random(): number {
    // Drawn between steps, a number would shift what later steps draw; a replay draws it elsewhere.
    // The workflow is parked then, so the number returned no longer matters.
    this.#isStray('random', '');
    return this.#random();
  }

  // --- called by workflow code (through the context) ---

  /** JSON of checked activity options, computed once per `ctx.activities()` call. */
  encodeActivityOptions(options: unknown): string {
    return this.#codec.activityOptions(options);
  }

  scheduleActivity(name: string, input: unknown, options: string): Promise<unknown> {
    this.#codec.name(name, 'activity name');
    const encoded = this.#codec.encode(input, `input of activity "${name}"`);
    const commandId = this.#nextCommandId++;
    this.#emit({ kind: 'scheduleActivity', commandId, name, input: encoded, options });
    let completion!: Completion & { kind: 'activity' };
    const promise = new Promise<unknown>((resolve, reject) => {
      completion = { kind: 'activity', name, resolve, reject, promise: undefined };
    });
    completion.promise = promise;
    this.#pending.set(commandId, completion);
    return promise;
  }

  startTimer(dueAt: number): Promise<void> {
    const commandId = this.#nextCommandId++;
    this.#emit({ kind: 'startTimer', commandId, dueAt });
    return new Promise((resolve) => {
      this.#pending.set(commandId, { kind: 'timer', dueAt, resolve });
    });
  }

  waitForEvent(name: string, timeoutAt: number | undefined): Promise<unknown> {
    this.#codec.name(name, 'event name');
    const handOut = this.#handingOut?.get(name);
    if (handOut && handOut.claimed < handOut.events.length) {
      // Started by a handler of a kept event: it takes the next kept event no wait took, as it
      // would had the events come now. The handlers get that event too, when its turn comes.
      return Promise.resolve(handOut.events[handOut.claimed++]);
    }
    const kept = this.#buffered?.get(name);
    if (kept && kept.length > 0) {
      // Taken between steps, with no command to record it, the event would be gone from where a
      // replay takes it. Like a stray command's, the promise never settles.
      if (this.#isStray('waitForEvent', name)) return new Promise(noop);
      return Promise.resolve(kept.shift());
    }
    const commandId = this.#nextCommandId++;
    this.#emit({ kind: 'waitEvent', commandId, name, timeoutAt });
    this.#waiters ??= new Map();
    let waiters = this.#waiters.get(name);
    if (!waiters) this.#waiters.set(name, (waiters = new Fifo()));
    waiters.push(commandId);
    let completion!: Completion & { kind: 'event' };
    const promise = new Promise<unknown>((resolve, reject) => {
      completion = { kind: 'event', name, timeoutAt, resolve, reject, promise: undefined };
    });
    completion.promise = promise;
    this.#pending.set(commandId, completion);
    return promise;
  }

  /** Throws a typed error naming what is wrong with an options object the workflow code passed. */
  checkOptions(options: unknown, known: readonly string[], what: string): void {
    this.#codec.options(options, known, what);
  }

  onEvent(name: string, handler: (payload: unknown) => unknown): void {
    this.#codec.name(name, 'event name');
    if (typeof handler !== 'function') throw new TypeError(`the handler of onEvent("${name}") must be a function, got ${typeof handler}`);
    // Registered between steps, it would take events that a replay, registering it later, keeps.
    if (this.#isStray('onEvent', name)) return;
    this.#handlers ??= new Map();
    let handlers = this.#handlers.get(name);
    if (handlers) handlers.push(handler);
    else this.#handlers.set(name, (handlers = [handler]));
    // Events kept because nobody listened belong to the first listener that shows up, handed out
    // as if they came now.
    const kept = this.#buffered?.get(name);
    if (kept && kept.length > 0) {
      this.#buffered!.delete(name);
      this.#handOut(name, kept.toArray(), handlers);
    }
  }

  /**
   * Hands kept events out as `deliverEvent` would had they come now, one at a time: to the
   * handlers registered by then, so one registered by a handler gets the events after the one it
   * handles, and a wait a handler starts takes the next event (see `waitForEvent`).
   */
  #handOut(name: string, events: unknown[], handlers: ((payload: unknown) => unknown)[]): void {
    const handOut = { events, handed: 0, claimed: 0 };
    (this.#handingOut ??= new Map()).set(name, handOut);
    while (handOut.handed < events.length) {
      const payload = events[handOut.handed++];
      // A wait started from here on takes an event after this one.
      handOut.claimed = Math.max(handOut.claimed, handOut.handed);
      const count = handlers.length;
      for (let i = 0; i < count; i++) this.#callHandler(handlers[i]!, payload);
    }
    this.#handingOut.delete(name);
  }

  setVar(name: string, value: unknown): void {
    this.#codec.name(name, 'variable name');
    const encoded = this.#codec.encode(value, `variable "${name}"`) ?? 'null';
    // Kept, it would show live at once, be stored only with the next step, and be set at another
    // point of the history by a replay.
    if (this.#isStray('setVar', name)) return;
    this.#vars ??= new Map();
    const vars = this.#vars;
    const previous = vars.get(name);
    if (previous === encoded) return;
    // The variables are stored as one document, written again at every change: their values
    // together must fit one payload. A UTF-16 unit is at most 3 UTF-8 bytes, so bytes are counted
    // only once they could matter, all of them once, and from then on change by change: measured
    // again at every call, a large variable made each change of a small one (a counter in a loop)
    // cost as much as the large one.
    const codec = this.#codec;
    const chars = this.#valueChars + encoded.length - (previous?.length ?? 0);
    let bytes = this.#valueBytes;
    if (bytes !== undefined) {
      bytes += codec.byteLength(encoded) - (previous === undefined ? 0 : codec.byteLength(previous));
    } else if (chars * 3 > codec.maxPayloadBytes) {
      bytes = codec.byteLength(encoded);
      for (const [other, value] of vars) if (other !== name) bytes += codec.byteLength(value);
    }
    // Checked before anything changes: a refused value leaves the variables as they were.
    if (bytes !== undefined) codec.checkBytes(bytes, "the workflow variables' values together");
    vars.set(name, encoded);
    this.#valueChars = chars;
    this.#valueBytes = bytes;
    this.#isVarsChanged = true;
  }

  complete(result: unknown): void {
    let encoded: string | undefined;
    try {
      encoded = this.#codec.encode(result, 'workflow result');
    } catch (error) {
      this.fail(error);
      return;
    }
    this.#emit({ kind: 'completeWorkflow', result: encoded });
    this.#isTerminal = true;
  }

  fail(error: unknown): void {
    this.#emit({ kind: 'failWorkflow', failure: this.#errors.toFailure(error) });
    this.#isTerminal = true;
  }

  // --- called by the actor ---

  /** Whether `commandId` is awaited as `kind`. */
  isPending(commandId: number, kind: Completion['kind']): boolean {
    return this.#pending.get(commandId)?.kind === kind;
  }

  /** The name of the activity or event `commandId` waits on. */
  nameOf(commandId: number): string {
    const completion = this.#pending.get(commandId);
    return completion && completion.kind !== 'timer' ? completion.name : '';
  }

  resolveActivity(commandId: number, result: unknown): void {
    this.#take(commandId, 'activity').resolve(result);
  }

  rejectActivity(commandId: number, attempts: number, failure: SerializedFailure): void {
    const completion = this.#take(commandId, 'activity');
    rejectHandled(completion, this.#errors.activityFailure(completion.name, attempts, failure));
  }

  /** A timer fired: resolves a sleep, or times out an event wait. */
  fireTimer(commandId: number): void {
    const completion = this.#pending.get(commandId);
    if (completion?.kind === 'timer') {
      this.#take(commandId, 'timer').resolve();
      return;
    }
    const wait = this.#take(commandId, 'event');
    this.#waiters?.get(wait.name)?.remove(commandId);
    rejectHandled(wait, this.#errors.timeout(`timed out waiting for event "${wait.name}"`));
  }

  /**
   * Delivers an event: to every handler of its name and to the oldest waiter; with neither, keeps
   * it. Returns the waiter it resolved, if any, and whether that waiter had a timeout timer that
   * must now be cancelled.
   */
  deliverEvent(name: string, payload: unknown): { waiter: number | undefined; hadTimeout: boolean } {
    // The wait is chosen first: one a handler starts for this name awaits the next event, not this one.
    const waiter = this.#waiters?.get(name)?.shift();
    const handlers = this.#handlers?.get(name);
    if (handlers) {
      // Likewise a handler registered by one of these takes the next event: handed this one too,
      // a handler that registers another at each call would never let the engine thread go.
      const count = handlers.length;
      for (let i = 0; i < count; i++) this.#callHandler(handlers[i]!, payload);
    }
    if (waiter === undefined) {
      if (!handlers) {
        this.#buffered ??= new Map();
        let kept = this.#buffered.get(name);
        if (!kept) this.#buffered.set(name, (kept = new Fifo()));
        kept.push(payload);
      }
      return { waiter, hadTimeout: false };
    }
    const wait = this.#take(waiter, 'event');
    wait.resolve(payload);
    return { waiter, hadTimeout: wait.timeoutAt !== undefined };
  }

  /**
   * Replay matched this timer or wait with its recorded one, which was due at `dueAt` (a wait's
   * timeout; undefined for none). The recorded time stands, as its timer row does, whatever
   * duration or timeout the code now asks for: so a changed duration parks nothing, and what
   * `inspect` shows, and whether an event must cancel a timeout, agree with what is stored.
   */
  keepRecordedDue(commandId: number, dueAt: number | undefined): void {
    const completion = this.#pending.get(commandId);
    if (completion?.kind === 'timer' && dueAt !== undefined) completion.dueAt = dueAt;
    else if (completion?.kind === 'event') completion.timeoutAt = dueAt;
  }

  /** Commands emitted since the last call. */
  takeCommands(): readonly Command[] {
    const commands = this.#commands;
    this.#commands = NO_ITEMS;
    return commands;
  }

  /** The variables as one JSON object if any changed since the last call, else undefined. */
  takeChangedVars(): string | undefined {
    if (!this.#isVarsChanged) return undefined;
    this.#isVarsChanged = false;
    return this.varsJson();
  }

  varsJson(): string {
    let out = '';
    for (const [name, value] of this.#vars ?? []) out += `${out ? ',' : '{'}${JSON.stringify(name)}:${value}`;
    return out ? `${out}}` : '{}';
  }

  /** Decoded variables, for a live `inspect`. */
  vars(): Record<string, unknown> {
    // fromEntries defines own properties: a variable named "__proto__" stays a variable.
    return Object.fromEntries([...(this.#vars ?? [])].map(([name, value]) => [name, JSON.parse(value)]));
  }

  /** Commands still awaited, with their timers (including event-wait timeouts). */
  outstanding(): Outstanding {
    const out: Outstanding = { activities: [], timers: [], events: [] };
    const pending = this.#pending.entries();
    for (const [commandId, c] of pending) {
      if (c.kind === 'activity') out.activities.push({ commandId, name: c.name });
      else if (c.kind === 'event') out.events.push({ commandId, name: c.name, timeoutAt: c.timeoutAt });
    }
    for (const [commandId, c] of pending) {
      if (c.kind === 'timer') out.timers.push({ commandId, dueAt: c.dueAt });
      else if (c.kind === 'event' && c.timeoutAt !== undefined) out.timers.push({ commandId, dueAt: c.timeoutAt });
    }
    return out;
  }

  /** A handler that throws or rejects fails the workflow, as an exception in its main body would. */
  #callHandler(handler: (payload: unknown) => unknown, payload: unknown): void {
    try {
      const returned = handler(payload);
      if (isThenable(returned)) returned.then(undefined, (error: unknown) => this.fail(error));
    } catch (error) {
      this.fail(error);
    }
  }

  #emit(command: Command): void {
    // Code that keeps running after the workflow returned (a lost Promise.race branch, say)
    // cannot add commands to a finished history.
    if (this.#isTerminal) return;
    if (!this.isInStep && this.onStray) {
      this.onStray(command);
      return;
    }
    this.#commands = appended(this.#commands, command);
  }

  /** Whether a change asked for now is stray; if so, it is handed to onStray, to be left unmade. */
  #isStray(method: StateChange['method'], name: string): boolean {
    if (this.isInStep || !this.onStray) return false;
    this.onStray({ kind: 'stateChange', method, name });
    return true;
  }

  #take<K extends Completion['kind']>(commandId: number, kind: K): Extract<Completion, { kind: K }> {
    const completion = this.#pending.get(commandId);
    if (completion?.kind !== kind) {
      throw new UnknownCommandError(commandId, kind);
    }
    this.#pending.delete(commandId);
    return completion as Extract<Completion, { kind: K }>;
  }
}

/** An inbound event named a command the workflow is not waiting on. */
export class UnknownCommandError extends Error {
  readonly commandId: number;
  constructor(commandId: number, kind: string) {
    super(`no pending ${kind} command #${commandId}`);
    this.name = 'UnknownCommandError';
    this.commandId = commandId;
  }
}
