import { describe, expect, it, vi } from 'vitest';

import { type ActivityFunction, type Engine, MetricName, type WorkflowContext, type WorkflowHandle } from 'duraflow';

import { isWaitingForLock, lockTable, serverBackends, type TestSchema, useSchema } from '../helpers/database.js';
import { readMetric, startEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

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
    await waitFor(() => isWaitingForLock(db, 'excluded.attempt'), 'the retry to be flushed');
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
    } finally {
      await engine.close();
    }
  });

  it('deletes it too when the workflow was rebuilt in between', async () => {
    // Only the monotonic clock is faked: the workflow's turn in memory passes without waiting.
    vi.useFakeTimers({ toFake: ['performance'] });
    const db = schema();
    const engine = await startEngine(db, {
      workflows: { retriedAlongsideABrokenFlush, quick },
      inlineActivities: { failsOnce, returnsBreaker },
      maxCachedWorkflows: 1,
      pollIntervalMs: 100,
    });
    try {
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
      await engine.close();
      vi.useRealTimers();
    }
  });
});
