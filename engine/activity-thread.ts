/**
 * The module Piscina loads in every activity thread. It imports the user's activities module
 * once per thread and runs attempts with `runAttempt`. Attempts arrive in batches (one Piscina
 * task each) and their outcomes go back on a BroadcastChannel as soon as each is ready, grouped
 * per turn of this thread's event loop: no attempt waits for a slower one of its batch, and the
 * main thread pays for one message per group, not per attempt. The outcomes ready when a batch
 * ends go back with Piscina's reply to it instead, which the main thread receives anyway: a batch
 * of quick attempts costs one message, not two. Nothing throws across the thread except
 * `describe`, which reports an unusable module at engine start.
 */
import { setMaxListeners } from 'node:events';
import { BroadcastChannel, threadId, workerData } from 'node:worker_threads';

import { type ActivityOutcome, type ActivityTask, activityIdOf } from './activity-context.js';
import { type ActivityFunction, AttemptStops, decodeInput, runAttempt } from './activity-runner.js';
import { JsonCodec } from './codec.js';
import { EngineClosedError, NameTakenOverError, unknownActivityFailure } from './errors.js';
import { toFailure } from './failure.js';

interface ThreadData {
  moduleUrl: string;
  closeChannel: string;
  resultsChannel: string;
  maxPayloadBytes: number;
}

/**
 * An attempt as batched by the pool (one JSON array of these per batch); `id` matches its
 * outcome to the caller, and the input, when there is one, is already decoded.
 */
type BatchedTask = [
  id: number,
  name: string,
  workflowId: string,
  commandId: number,
  attempt: number,
  timeoutMs: number | null,
  /** The pool's short name for the workflow's name (see `AttemptStops`). */
  group: string,
  input?: unknown,
];

/**
 * What the pool tells every thread: it closes, or the attempts of these workflow names (by the
 * pool's short name for each) up to `maxId` are to stop, because another engine took the names
 * over. The pool sends every stop again when a thread says it is ready, so a thread that started
 * after a stop was sent hears it too.
 */
export type ThreadControl = 'close' | { stop: [group: string, maxId: number, workflowName: string][] };

/**
 * Posted when a batch with attempts that have a timeout starts: which thread runs it (the batch
 * named by its first attempt's id), and those attempts, whose hard deadlines run from now.
 */
export interface BatchStarted {
  batchStarted: number;
  timed: number[];
  thread: number;
}

/**
 * An outcome as posted on the results channel: flat, so cloning it is cheap. `payload` is the
 * result's JSON (ok) or the failure (not ok).
 */
export type BatchedOutcome = [
  id: number,
  isOk: boolean,
  startedAt: number,
  durationMs: number,
  payload: unknown,
  retryAt?: number,
];

const data = workerData as ThreadData;
const codec = new JsonCodec(data.maxPayloadBytes);
const loaded: Promise<Record<string, unknown>> = import(data.moduleUrl);
// Keep a failed import from surfacing as an unhandled rejection before anyone awaits it.
loaded.catch(() => undefined);

const closing = new AbortController();
// Every attempt in flight listens for the close.
setMaxListeners(0, closing.signal);
const stops = new AttemptStops();
const closeChannel = new BroadcastChannel(data.closeChannel);
closeChannel.onmessage = (event) => {
  const message = (event as { data: ThreadControl }).data;
  if (message === 'close') {
    closing.abort(new EngineClosedError());
    // The pool terminates this thread once it hears that the attempts here saw their signals
    // abort and had a turn to act on it; at once if none runs. Not from a callback alone: a Piscina
    // thread left with no task waits for the next one with its event loop blocked, so the last
    // task to end says it too.
    if (tasksRunning === 0) sayClosed();
    else setImmediate(sayClosed);
  } else for (const [group, maxId, workflowName] of message.stop) stops.stop(group, maxId, new NameTakenOverError(workflowName));
};
const results = new BroadcastChannel(data.resultsChannel);
// The channels must not keep an idle thread alive.
(closeChannel as unknown as { unref(): void }).unref();
(results as unknown as { unref(): void }).unref();
// Listening now: the pool sends every stop so far (a broadcast reaches only those listening).
results.postMessage({ ready: threadId });

/** Piscina tasks (batches, or attempts alone) running in this thread. */
let tasksRunning = 0;

function sayClosed(): void {
  results.postMessage({ closed: threadId });
}

/** Counts a task while it runs (see the close). */
async function counted<R>(task: () => Promise<R>): Promise<R> {
  tasksRunning++;
  try {
    return await task();
  } finally {
    if (--tasksRunning === 0 && closing.signal.aborted) sayClosed();
  }
}

let ready: BatchedOutcome[] = [];
let isPostScheduled = false;

function post(): void {
  isPostScheduled = false;
  if (ready.length === 0) return;
  const outcomes = ready;
  ready = [];
  results.postMessage(outcomes);
}

function report(id: number, outcome: ActivityOutcome): void {
  ready.push(
    outcome.ok
      ? [id, true, outcome.startedAt, outcome.durationMs, outcome.result]
      : outcome.retryAt === undefined
        ? [id, false, outcome.startedAt, outcome.durationMs, outcome.failure]
        : [id, false, outcome.startedAt, outcome.durationMs, outcome.failure, outcome.retryAt],
  );
  if (isPostScheduled) return;
  isPostScheduled = true;
  setImmediate(post);
}

/** Names of the functions the activities module exports. */
export async function describe(): Promise<string[]> {
  const mod = await loaded;
  return Object.keys(mod).filter((name) => typeof mod[name] === 'function');
}

/**
 * Runs one attempt alone (the single-attempt pool's task) and returns its outcome. With a timeout
 * (`startId` set) it tells the main thread when it starts, after the module has loaded: its hard
 * deadline counts from then, not from the queue.
 */
export default function runActivity(task: ActivityTask): Promise<ActivityOutcome> {
  return counted(async () => {
    if (task.startId !== undefined) {
      // A fresh thread loads the module first: that is not the attempt's time.
      await loaded.catch(() => undefined);
      results.postMessage({ started: task.startId });
    }
    return runDecoded(task, decodeInput(task));
  });
}

async function runDecoded(task: Omit<ActivityTask, 'input'>, input: unknown): Promise<ActivityOutcome> {
  let mod: Record<string, unknown>;
  try {
    mod = await loaded;
  } catch (error) {
    return moduleFailure(error);
  }
  return runLoaded(mod, task, input);
}

function moduleFailure(error: unknown): ActivityOutcome {
  return { ok: false, failure: toFailure(error), startedAt: Date.now(), durationMs: 0 };
}

function runLoaded(mod: Record<string, unknown>, task: Omit<ActivityTask, 'input'>, input: unknown): Promise<ActivityOutcome> | ActivityOutcome {
  const fn = mod[task.name];
  if (typeof fn !== 'function') {
    return { ok: false, failure: unknownActivityFailure(task.name), startedAt: Date.now(), durationMs: 0 };
  }
  return runAttempt(fn as ActivityFunction, task, input, closing.signal, codec, stops);
}

/**
 * Runs a batch of attempts concurrently. Outcomes ready before the batch ends are posted on the
 * results channel; the rest (of this batch or another on this thread) are returned.
 */
export function runBatch(text: string): Promise<BatchedOutcome[]> {
  return counted(() => runParsedBatch(text));
}

async function runParsedBatch(text: string): Promise<BatchedOutcome[]> {
  const batch = JSON.parse(text) as BatchedTask[];
  const timed = batch.filter((task) => task[5] !== null).map(([id]) => id);
  // Only these need it: a message on every batch would cost a lone workflow's every step. A fresh
  // thread loads the module first: that is not the attempts' time.
  if (timed.length > 0) {
    await loaded.catch(() => undefined);
    results.postMessage({ batchStarted: batch[0]![0], timed, thread: threadId } satisfies BatchStarted);
  }
  // The module once per batch, not once per attempt: each await is a promise and a turn.
  let mod: Record<string, unknown>;
  try {
    mod = await loaded;
  } catch (error) {
    for (const [id] of batch) report(id, moduleFailure(error));
    return takeUnposted();
  }
  await Promise.all(batch.map((entry) => runAndReport(mod, entry)));
  return takeUnposted();
}

async function runAndReport(
  mod: Record<string, unknown>,
  [id, name, workflowId, commandId, attempt, timeoutMs, group, input]: BatchedTask,
): Promise<void> {
  const task = { id, group, name, workflowId, activityId: activityIdOf(workflowId, commandId), attempt, timeoutMs: timeoutMs ?? undefined };
  report(id, await runLoaded(mod, task, input));
}

/** Outcomes not posted yet: they ride on Piscina's reply, which the main thread receives anyway. */
function takeUnposted(): BatchedOutcome[] {
  const unposted = ready;
  ready = [];
  return unposted;
}
