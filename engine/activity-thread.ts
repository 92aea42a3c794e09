/**
 * The module Piscina loads in every activity thread. It imports the user's activities module
 * once per thread and runs attempts with `runAttempt`; it never throws across the thread except
 * from `describe`, which reports an unusable module at engine start.
 */
import { BroadcastChannel, workerData } from 'node:worker_threads';

import type { ActivityOutcome, ActivityTask } from './activity-context.js';
import { type ActivityFunction, runAttempt } from './activity-runner.js';
import { EngineClosedError } from './errors.js';
import { toFailure } from './failure.js';

interface ThreadData {
  moduleUrl: string;
  closeChannel: string;
}

const data = workerData as ThreadData;
const loaded: Promise<Record<string, unknown>> = import(data.moduleUrl);
// Keep a failed import from surfacing as an unhandled rejection before anyone awaits it.
loaded.catch(() => undefined);

const closing = new AbortController();
const channel = new BroadcastChannel(data.closeChannel);
channel.onmessage = () => closing.abort(new EngineClosedError());
// The channel must not keep an idle thread alive.
(channel as unknown as { unref(): void }).unref();

/** Names of the functions the activities module exports. */
export async function describe(): Promise<string[]> {
  const mod = await loaded;
  return Object.keys(mod).filter((name) => typeof mod[name] === 'function');
}

/** Runs one attempt. */
export default async function runActivity(task: ActivityTask): Promise<ActivityOutcome> {
  let mod: Record<string, unknown>;
  try {
    mod = await loaded;
  } catch (error) {
    return { ok: false, failure: toFailure(error), startedAt: Date.now(), durationMs: 0 };
  }
  const fn = mod[task.name];
  if (typeof fn !== 'function') {
    return {
      ok: false,
      failure: {
        name: 'UnknownActivityError',
        message: `the activities module exports no function named ${JSON.stringify(task.name)}`,
        nonRetryable: true,
      },
      startedAt: Date.now(),
      durationMs: 0,
    };
  }
  return runAttempt(fn as ActivityFunction, task, closing.signal);
}
