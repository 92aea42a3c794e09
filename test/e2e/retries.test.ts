import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { type ActivityFunction, ActivityFailure, type Engine, MetricName, type WorkflowContext, type WorkflowHandle } from 'duraflow';

import { backends, isWaitingForLock, lockTable, serverBackends, type TestSchema, useSchema } from '../helpers/database.js';
import { fixtureActivities, loggerKeeping, openClient, quietLogger, readMetric, startEngine } from '../helpers/engines.js';
import { untilClosed } from '../helpers/held-activity.js';
import { waitFor } from '../helpers/wait-for.js';

type Fixtures = typeof import('../fixtures/activities.js');

async function flakyTwice(ctx: WorkflowContext): Promise<number> {
  const { flaky } = ctx.activities<Fixtures>({ retry: { initialIntervalMs: 10, maxAttempts: 5 } });
  return flaky({ succeedOn: 3 });
}

async function retryLaterOnce(ctx: WorkflowContext, input: { delayMs: number }): Promise<{ attempt: number; at: number }> {
  const { retryLater } = ctx.activities<Fixtures>({ retry: { initialIntervalMs: 1 } });
  return retryLater(input);
}

/** Returns what the caught ActivityFailure carried: attempts and its cause's details. */
async function declinedWithDetails(ctx: WorkflowContext): Promise<unknown> {
  try {
    await ctx.activities<Fixtures>({ retry: { maxAttempts: 3 } }).declinesWithDetails();
    return 'no error';
  } catch (error) {
    return { attempts: (error as ActivityFailure).attempts, details: ((error as Error).cause as { details?: unknown }).details };
  }
}

/** Waits briefly under the longest startToCloseTimeoutMs there is. */
async function underTheLongestTimeout(ctx: WorkflowContext): Promise<unknown> {
  return ctx.activities<Fixtures>({ startToCloseTimeoutMs: 2 ** 31 - 1, retry: { maxAttempts: 1 } }).wait(50);
}

async function asksRetry(ctx: WorkflowContext, input: { after?: unknown; at?: unknown }): Promise<string> {
  const { askRetry } = ctx.activities<Fixtures>();
  return askRetry(input);
}

/** Leaves an activity waiting for its retry behind when the event ends it. */
async function abandonsRetry(ctx: WorkflowContext): Promise<string> {
  const { retryLater } = ctx.activities<Fixtures>({ retry: { initialIntervalMs: 1 } });
  void retryLater({ delayMs: 600_000 });
  await ctx.waitForEvent('stop');
  return 'stopped';
}

/** Starts a timer and ends in the same step. */
async function abandonsTimer(ctx: WorkflowContext): Promise<string> {
  void ctx.sleep(600_000);
  return 'done';
}

/** Returns what the caught ActivityFailure said, so the test can check it. */
async function catches(ctx: WorkflowContext, input: { which: 'decline' | 'exhaust' | 'byName' }): Promise<unknown> {
  const stubs = ctx.activities<Fixtures>({
    retry: { initialIntervalMs: 5, maxAttempts: 3, ...(input.which === 'byName' ? { nonRetryable: ['BoomError'] } : {}) },
  });
  try {
    if (input.which === 'decline') await stubs.decline({ reason: 'card declined' });
    else await stubs.alwaysFails();
    return 'no error';
  } catch (error) {
    if (!(error instanceof ActivityFailure)) return `unexpected ${String(error)}`;
    const cause = error.cause as Error;
    return { activityName: error.activityName, attempts: error.attempts, cause: { name: cause.name, message: cause.message, hasStack: typeof cause.stack === 'string' } };
  }
}

describe.each(backends)('activity retries on $name', (backend) => {
  let db: TestSchema;
  beforeEach(async () => {
    db = await backend.schema();
  });
  afterEach(async () => {
    await db.drop();
  });

  it('retries an activity that fails twice; the third attempt succeeds', async () => {
    const engine = await startEngine(db, { workflows: { flakyTwice }, activities: fixtureActivities });
    try {
      const handle = await engine.startWorkflow(flakyTwice, undefined);
      expect(await handle.result()).toBe(3);
      const completed = (await engine.inspect(handle.workflowId)).history.find((e) => e.type === 'ActivityCompleted');
      expect(completed).toMatchObject({ attempts: 3, result: 3 });
    } finally {
      await engine.close();
    }
  });

  it('fails an activity once with the details JSON can carry, and gives a long timeout its time', async () => {
    const engine = await startEngine(db, {
      workflows: { declinedWithDetails, underTheLongestTimeout },
      activities: fixtureActivities,
    });
    try {
      // Details a thread cannot copy as they are took the thread down: each attempt then failed as its crash.
      expect(await (await engine.startWorkflow(declinedWithDetails, undefined)).result()).toEqual({
        attempts: 1,
        details: { reason: 'card' },
      });
      // Its hard deadline (the timeout plus a grace) is past what a timer keeps: it fired at once.
      expect(await (await engine.startWorkflow(underTheLongestTimeout, undefined)).result()).toBe(50);
    } finally {
      await engine.close();
    }
  });

  it("honours the activity's own retryAfter over the backoff", async () => {
    const engine = await startEngine(db, { workflows: { retryLaterOnce }, activities: fixtureActivities });
    try {
      const handle = await engine.startWorkflow(retryLaterOnce, { delayMs: 300 });
      const out = await handle.result();
      expect(out.attempt).toBe(2);
      const scheduled = (await engine.inspect(handle.workflowId)).history.find((e) => e.type === 'ActivityScheduled')!;
      expect(out.at - scheduled.at.getTime()).toBeGreaterThanOrEqual(300);
    } finally {
      await engine.close();
    }
  });

  it('refuses a retry time that is not a time or beyond a Date, naming it', async () => {
    const engine = await startEngine(db, { workflows: { asksRetry }, activities: fixtureActivities });
    try {
      const answers = await Promise.all(
        [
          { after: null },
          { after: -5 },
          { after: 'soon' },
          { after: 1e300 },
          { at: null },
          { at: new Date(Number.NaN) },
          { at: 9e15 },
          { after: 10 },
        ].map(
          async (input) => (await engine.startWorkflow(asksRetry, input)).result(),
        ),
      );
      expect(answers).toEqual([
        'InvalidArgumentError: retryAfter delay must be a finite number of milliseconds >= 0, got null',
        'InvalidArgumentError: retryAfter delay must be a finite number of milliseconds >= 0, got -5',
        'InvalidArgumentError: retryAfter delay must be a finite number of milliseconds >= 0, got the string "soon"',
        'InvalidArgumentError: retryAfter delay 1e+300 ends beyond the range of a Date',
        'InvalidArgumentError: retryAt time must be a Date or a finite number of epoch milliseconds, got null',
        // JSON carries an invalid Date as null.
        'InvalidArgumentError: retryAt time must be a Date or a finite number of epoch milliseconds, got null',
        'InvalidArgumentError: retryAt time 9000000000000000 is outside the range of a Date',
        'accepted',
      ]);
    } finally {
      await engine.close();
    }
  });

  it('cancels what a finished workflow left waiting: a retry armed earlier, a timer started in its last step', async () => {
    const engine = await startEngine(db, { workflows: { abandonsRetry, abandonsTimer }, activities: fixtureActivities });
    const timersArmed = (): Promise<number> => readMetric(engine, MetricName.TimersArmed);
    try {
      const retrying = await engine.startWorkflow(abandonsRetry, undefined);
      await waitFor(
        async () => (await db.query(`SELECT 1 FROM "${db.schema}".activity_tasks WHERE workflow_id = $1`, [retrying.workflowId])).length > 0,
        'the retry to be stored',
      );
      // Armed by the commit's callback, which may run just after the row became visible.
      await waitFor(async () => (await timersArmed()) === 1, 'the retry to be armed');
      expect(await timersArmed()).toBe(1);
      await engine.sendEvent(retrying.workflowId, 'stop');
      expect(await retrying.result()).toBe('stopped');
      expect(await (await engine.startWorkflow(abandonsTimer, undefined)).result()).toBe('done');
      // Nothing is left to fire: no rows a restart would re-arm, nothing armed in memory.
      expect(await db.query(`SELECT workflow_id FROM "${db.schema}".activity_tasks`)).toEqual([]);
      expect(await db.query(`SELECT workflow_id FROM "${db.schema}".timers`)).toEqual([]);
      expect(await timersArmed()).toBe(0);
    } finally {
      await engine.close();
    }
  });

  it('fails at once on NonRetryableError', async () => {
    const engine = await startEngine(db, { workflows: { catches }, activities: fixtureActivities });
    try {
      const out = await (await engine.startWorkflow(catches, { which: 'decline' })).result();
      expect(out).toEqual({ activityName: 'decline', attempts: 1, cause: { name: 'NonRetryableError', message: 'card declined', hasStack: true } });
    } finally {
      await engine.close();
    }
  });

  it('gives up after maxAttempts with ActivityFailure carrying the last error', async () => {
    const engine = await startEngine(db, { workflows: { catches }, activities: fixtureActivities });
    try {
      const out = await (await engine.startWorkflow(catches, { which: 'exhaust' })).result();
      expect(out).toEqual({ activityName: 'alwaysFails', attempts: 3, cause: { name: 'BoomError', message: 'boom', hasStack: true } });
      const byName = await (await engine.startWorkflow(catches, { which: 'byName' })).result();
      expect(byName).toMatchObject({ attempts: 1, cause: { name: 'BoomError' } });
    } finally {
      await engine.close();
    }
  });
});

/*
 * A failed flush makes the engine rebuild the workflows in it and re-run every activity their
 * history leaves unfinished. An attempt that failed meanwhile has its retry stored by the rebuilt
 * actor; if the recovery looked before that retry committed, it runs the first attempt again,
 * and that first attempt may be the one that ends the activity. These tests hold tables to put
 * the steps in that order, so they run on a Postgres server.
 */

/** The result that makes the flush carrying it fail, once (see `breakOneFlush`). */
const FLUSH_BREAKER = 'breaks-the-flush-it-is-in';

/** The runs of `failsOnce`, each settled by the test. */
let failsOnceRuns: { fail(): void; succeed(): void }[] = [];
/** Ends as the test says: failing asks for a retry in a minute. */
const failsOnce: ActivityFunction = (_input, ctx) =>
  new Promise<string>((resolve, reject) => {
    failsOnceRuns.push({
      fail() {
        ctx.retryAfter(60_000);
        reject(new Error('the first run fails'));
      },
      succeed: () => resolve('succeeded'),
    });
  });

let breakerRuns = 0;
let finishBreaker: (() => void) | undefined;
/** Returns FLUSH_BREAKER, the first time when the test says so. */
const returnsBreaker: ActivityFunction = () => {
  breakerRuns++;
  if (breakerRuns > 1) return FLUSH_BREAKER;
  return new Promise<string>((resolve) => (finishBreaker = () => resolve(FLUSH_BREAKER)));
};

async function quick(): Promise<string> {
  return 'quick';
}

async function retriedAlongsideABrokenFlush(ctx: WorkflowContext): Promise<unknown> {
  const { failsOnce, returnsBreaker } = ctx.activities<{
    failsOnce(): Promise<string>;
    returnsBreaker(): Promise<string>;
  }>();
  return Promise.all([failsOnce(), returnsBreaker()]);
}

/** Makes the first flush whose history carries FLUSH_BREAKER fail: a real failure of the database. */
async function breakOneFlush(db: TestSchema): Promise<void> {
  await db.query(`CREATE SEQUENCE "${db.schema}".flush_faults;
    CREATE FUNCTION "${db.schema}".break_one_flush() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.payload LIKE '%${FLUSH_BREAKER}%' AND nextval('"${db.schema}".flush_faults') = 1 THEN
        RAISE EXCEPTION 'a flush broken by the test';
      END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER break_one_flush BEFORE INSERT ON "${db.schema}".history
      FOR EACH ROW EXECUTE FUNCTION "${db.schema}".break_one_flush()`);
}

/**
 * Starts 'race' and puts its steps in the racing order: the flush of `returnsBreaker`'s result
 * fails, the recovery reads what is unfinished before the retry of `failsOnce`'s failed first
 * attempt commits, and so runs that first attempt again. Returns once the retry has committed,
 * with the re-run attempt still running.
 */
async function raceARetry(engine: Engine, db: TestSchema): Promise<WorkflowHandle<unknown>> {
  await breakOneFlush(db);
  failsOnceRuns = [];
  breakerRuns = 0;
  const started = await engine.startWorkflow(retriedAlongsideABrokenFlush, undefined, { workflowId: 'race' });
  await waitFor(() => failsOnceRuns.length === 1 && breakerRuns === 1, 'both activities to start');
  const locks: { release(): Promise<void> }[] = [];
  try {
    // The recovery's read of unfinished activities waits here...
    const tasks = await lockTable(db, 'activity_tasks');
    locks.push(tasks);
    finishBreaker!();
    await waitFor(() => isWaitingForLock(db, "'ActivityScheduled'"), 'the recovery to read unfinished activities');
    // ...and every flush waits here, so the retry stored next cannot commit before that read.
    const commits = await lockTable(db, 'wal_commits');
    locks.push(commits);
    failsOnceRuns[0]!.fail();
    // The retry's is the only flush now, and its task upsert its first part. (Recognised by its
    // start: Postgres shows only the first kilobyte of a statement.)
    await waitFor(() => isWaitingForLock(db, 'WITH up_a AS'), 'the retry to be flushed');
    await tasks.release();
    await waitFor(() => failsOnceRuns.length === 2, 'the recovery to run the first attempt again');
    await commits.release();
    await waitFor(async () => (await taskRows(db)).length === 1, 'the retry to commit');
    return started;
  } finally {
    for (const lock of locks) await lock.release();
  }
}

async function taskRows(db: TestSchema): Promise<unknown[]> {
  return db.query(`SELECT attempt FROM "${db.schema}".activity_tasks WHERE workflow_id = 'race'`);
}

describe.each(serverBackends)('a retry racing a recovery on $name', (backend) => {
  const schema = useSchema(backend);

  it('deletes the retry state of an activity that a re-run first attempt ended', async () => {
    const db = schema();
    const engine = await startEngine(db, {
      workflows: { retriedAlongsideABrokenFlush },
      inlineActivities: { failsOnce, returnsBreaker },
      pollIntervalMs: 600_000,
    });
    try {
      const started = await raceARetry(engine, db);
      failsOnceRuns[1]!.succeed();
      expect(await started.result({ timeoutMs: 10_000 })).toEqual(['succeeded', FLUSH_BREAKER]);
      expect(await taskRows(db)).toEqual([]);
      // The retry armed when its row committed is cancelled with it.
      expect(await readMetric(engine, MetricName.TimersArmed)).toBe(0);
    } finally {
      await engine.close();
    }
  });

  it('deletes it too when the workflow was rebuilt in between', async () => {
    const db = schema();
    const engine = await startEngine(db, {
      workflows: { retriedAlongsideABrokenFlush, quick },
      inlineActivities: { failsOnce, returnsBreaker },
      maxCachedWorkflows: 1,
      pollIntervalMs: 100,
    });
    try {
      // Only the monotonic clock is faked: the workflow's turn in memory passes without waiting.
      vi.useFakeTimers({ toFake: ['performance'] });
      const started = await raceARetry(engine, db);
      await waitFor(async () => (await engine.inspect('race')).waitingOn.activities.length === 1, 'race to await only failsOnce');
      // Another workflow takes race's place once race has had its turn.
      const other = await engine.startWorkflow(quick, undefined, { workflowId: 'other' });
      vi.advanceTimersByTime(40_000);
      expect(await other.result({ timeoutMs: 10_000 })).toBe('quick');
      expect(await readMetric(engine, MetricName.ActorEvictions)).toBe(1);
      failsOnceRuns[1]!.succeed();
      expect(await started.result({ timeoutMs: 10_000 })).toEqual(['succeeded', FLUSH_BREAKER]);
      expect(await readMetric(engine, MetricName.ActorRehydrations)).toBeGreaterThan(0);
      expect(await taskRows(db)).toEqual([]);
    } finally {
      vi.useRealTimers();
      await engine.close();
    }
  });
});

/*
 * An actor that keeps failing is rebuilt after a growing pause, and what comes for its workflow
 * during the pause is dropped: the rebuild's recovery reads it again from the database. The retry
 * of an attempt that failed in the pause is not in the database yet (the actor stores it), so the
 * rebuild must get it some other way, or the attempt count and the backoff start over.
 */

/** How long the retry of `counted`'s first attempt waits. */
const RETRY_DELAY_MS = 1_000;

/** The runs of `counted` in the engine under test: the attempt each was, and when it began. */
let countedRuns: { attempt: number; at: number }[] = [];
let failFirstRun: (() => void) | undefined;
/** Its first run fails when the test says so; the others return which attempt they were. */
const counted: ActivityFunction = (_input, ctx) => {
  countedRuns.push({ attempt: ctx.attempt, at: Date.now() });
  if (countedRuns.length > 1) return `attempt ${ctx.attempt}`;
  return new Promise<string>((_resolve, reject) => (failFirstRun = () => reject(new Error('the first run fails'))));
};

async function countsAttempts(ctx: WorkflowContext): Promise<string> {
  const { counted } = ctx.activities<{ counted(): Promise<string> }>({
    retry: { initialIntervalMs: RETRY_DELAY_MS, maxAttempts: 3 },
  });
  return counted();
}

/** Like `countsAttempts`, with no attempt after the first: what its failure said, if it failed. */
async function triesOnce(ctx: WorkflowContext): Promise<string> {
  const { counted } = ctx.activities<{ counted(): Promise<string> }>({ retry: { maxAttempts: 1 } });
  try {
    return await counted();
  } catch (error) {
    return `failed after ${(error as ActivityFailure).attempts}`;
  }
}

/**
 * Starts `workflow` as 'counter' in an engine whose `counted` does not end, then makes the
 * workflow's history unreadable (its first row). Returns what makes it readable again.
 */
async function leaveUnreadable(db: TestSchema, workflow: (ctx: WorkflowContext) => Promise<string>): Promise<() => Promise<void>> {
  const first = await startEngine(db, { workflows: { [workflow.name]: workflow }, inlineActivities: { counted: untilClosed } });
  try {
    await first.startWorkflow(workflow, undefined, { workflowId: 'counter' });
  } finally {
    await first.close();
  }
  const history = `"${db.schema}".history`;
  const [started] = await db.query<{ payload: string }>(`SELECT payload FROM ${history} WHERE workflow_id = 'counter' AND seq = 1`);
  const setPayload = (payload: string) => db.query(`UPDATE ${history} SET payload = $1 WHERE workflow_id = 'counter' AND seq = 1`, [payload]);
  await setPayload('{');
  return async () => {
    await setPayload(started!.payload);
  };
}

/**
 * Starts `workflow` as 'counter' in an engine whose `counted` does not end, makes the workflow's
 * history unreadable, and starts a second engine in which the first run of `counted` fails while
 * the workflow waits out a rebuild's pause; returns once the rebuild after that pause failed too.
 * `repair` makes the history readable again.
 */
async function failFirstRunInAPause(
  db: TestSchema,
  workflow: (ctx: WorkflowContext) => Promise<string>,
): Promise<{ engine: Engine; failedInAPause: number; repair(): Promise<void> }> {
  const workflows = { [workflow.name]: workflow };
  // The first attempt is stored as scheduled, and runs on when the next engine starts. Its
  // history unreadable, the workflow fails to load at every rebuild until it is repaired; the
  // event makes each rebuild's recovery load it again.
  const repair = await leaveUnreadable(db, workflow);
  const client = await openClient(db);
  await client.sendEvent('counter', 'poke');
  await client.close();

  countedRuns = [];
  failFirstRun = undefined;
  let loadFailures = 0;
  let failedAt: number | undefined;
  let loadFailuresBefore = 0;
  const logger = {
    ...quietLogger,
    error(obj: object, msg?: string) {
      quietLogger.error(obj, msg);
      if (msg !== 'loading workflow failed') return;
      // From the second failure in a row on, the rebuild waits out a pause, which starts as this
      // returns: the attempt's failure reaches the engine (in microtasks) within it.
      if (++loadFailures >= 2 && failFirstRun && failedAt === undefined) {
        failedAt = Date.now();
        loadFailuresBefore = loadFailures;
        failFirstRun();
      }
    },
  };
  // No polls: after the pause, the retry handed on by the rebuild is the first message that
  // comes for the workflow (the rebuild's read of the inbox comes after it).
  const engine = await startEngine(db, { workflows, inlineActivities: { counted }, logger, pollIntervalMs: 600_000 });
  try {
    const failedInAPause = await waitFor(() => failedAt, 'the first attempt to fail while the workflow is paused');
    // The rebuilt actor that takes the outcome fails to load too, and hands it back.
    await waitFor(() => loadFailures > loadFailuresBefore, 'the rebuild after the pause to fail as well');
    return { engine, failedInAPause, repair };
  } catch (error) {
    await engine.close();
    throw error;
  }
}

describe.each(backends)('a retry during a rebuild on $name', (backend) => {
  const schema = useSchema(backend);

  it('runs an activity once, not at every rebuild, when its workflow fails to load its result until the history is repaired', async () => {
    const db = schema();
    const repair = await leaveUnreadable(db, countsAttempts);
    let runs = 0;
    const { logger, errors: loadFailures } = loggerKeeping('loading workflow failed');
    // The recovery at the start runs the attempt; its result makes the workflow load, which fails.
    const engine = await startEngine(db, {
      workflows: { countsAttempts },
      inlineActivities: { counted: (_input, ctx) => `run ${++runs} as attempt ${ctx.attempt}` },
      logger,
    });
    try {
      await waitFor(() => loadFailures.length >= 4, 'four failed loads', 10_000);
      expect(runs).toBe(1);
      await repair();
      expect(await engine.result('counter', { timeoutMs: 20_000 })).toBe('run 1 as attempt 1');
      expect(runs).toBe(1);
    } finally {
      await engine.close();
    }
  });

  it('goes on with the next attempt after its backoff when the attempt failed while the workflow was paused for rebuilds that kept failing', async () => {
    const { engine, failedInAPause, repair } = await failFirstRunInAPause(schema(), countsAttempts);
    try {
      await repair();
      expect(await engine.result('counter', { timeoutMs: 20_000 })).toBe('attempt 2');
      expect(countedRuns.map((run) => run.attempt)).toEqual([1, 2]);
      expect(countedRuns[1]!.at - failedInAPause).toBeGreaterThanOrEqual(RETRY_DELAY_MS);
    } finally {
      await engine.close();
    }
  });

  it('fails the activity without running it again when its last attempt failed while the workflow was paused for rebuilds that kept failing', async () => {
    const { engine, repair } = await failFirstRunInAPause(schema(), triesOnce);
    try {
      await repair();
      expect(await engine.result('counter', { timeoutMs: 20_000 })).toBe('failed after 1');
      expect(countedRuns.map((run) => run.attempt)).toEqual([1]);
    } finally {
      await engine.close();
    }
  });
});

/*
 * The retry of a failed attempt is stored by the step that takes it. If that step's flush fails,
 * its workflow is rebuilt from the database, which has no trace of the retry: the rebuild would
 * run the attempt that failed again at once, as the same attempt, unless the retry is kept for it.
 */

/** Makes the first flush that stores a second attempt of an activity fail, once: a statement error. */
async function breakFlushOfFirstRetry(db: TestSchema): Promise<void> {
  const s = `"${db.schema}"`;
  await db.query(`CREATE SEQUENCE ${s}.retry_faults`);
  await db.query(`CREATE FUNCTION ${s}.break_retry() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.attempt = 2 AND nextval('${s}.retry_faults') = 1 THEN
        RAISE EXCEPTION 'a flush broken by the test';
      END IF;
      RETURN NEW;
    END $$`);
  await db.query(`CREATE TRIGGER break_retry BEFORE INSERT ON ${s}.activity_tasks FOR EACH ROW EXECUTE FUNCTION ${s}.break_retry()`);
}

describe.each(backends)('a retry whose flush fails on $name', (backend) => {
  const schema = useSchema(backend);

  it('runs the next attempt after its backoff, not the failed one again at once', async () => {
    const db = schema();
    countedRuns = [];
    failFirstRun = undefined;
    const engine = await startEngine(db, { workflows: { countsAttempts }, inlineActivities: { counted } });
    try {
      await breakFlushOfFirstRetry(db);
      const started = await engine.startWorkflow(countsAttempts, undefined, { workflowId: 'counter' });
      const fail = await waitFor(() => failFirstRun, 'the first attempt to run');
      const failedAt = Date.now();
      fail();
      expect(await started.result({ timeoutMs: 20_000 })).toBe('attempt 2');
      expect(await readMetric(engine, MetricName.WalFlushErrors)).toBe(1);
      expect(countedRuns.map((run) => run.attempt)).toEqual([1, 2]);
      expect(countedRuns[1]!.at - failedAt).toBeGreaterThanOrEqual(RETRY_DELAY_MS);
    } finally {
      await engine.close();
    }
  });
});
