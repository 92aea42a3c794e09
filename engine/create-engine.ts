import { isRetryable } from '../storage/pg-errors.js';
import type { TaskRow } from '../storage/rows.js';
import type { ActivityOutcome } from './activity-context.js';
import { ActivityPool } from './activity-pool.js';
import { type Engine, EngineImpl } from './engine.js';
import { DatabaseUnavailableError } from './errors.js';
import { type EngineOptions, resolveEngineOptions } from './options.js';
import { WorkflowStore } from './workflow-store.js';

/**
 * Starts an engine: connects (or opens the embedded database), applies the schema, loads the
 * activities module in its threads, claims the leases of the workflow names it registers, and
 * recovers the unfinished workflows of those it got. It does not wait for names another engine
 * holds (one that crashed, too, until its lease expires): it takes them over when it can.
 * Rejects with TypeError/RangeError for bad options, `ConfigurationError` for an unusable
 * activities module or a database that refuses to be opened, and `DatabaseUnavailableError` for
 * one that cannot be reached or is lost before the start is done.
 */
export async function createEngine(options: EngineOptions): Promise<Engine> {
  const resolved = resolveEngineOptions(options);
  const store = await WorkflowStore.open(resolved);
  let pool: ActivityPool<TaskRow> | undefined;
  // The pool reports outcomes to the engine, which exists only once the pool does.
  let report: (task: TaskRow, outcome: ActivityOutcome | undefined, workflowName: string) => void = () => undefined;
  try {
    pool = await ActivityPool.create<TaskRow>(
      {
        moduleUrl: resolved.activities,
        threads: resolved.activityThreads,
        concurrencyPerThread: resolved.activityConcurrency,
        inline: resolved.inlineActivities,
        maxHeapMb: resolved.activityMaxHeapMb,
        maxPayloadBytes: resolved.maxPayloadBytes,
      },
      (task, outcome, workflowName) => report(task, outcome, workflowName),
      (error) => resolved.logger.error({ err: error }, 'an activity thread failed'),
    );
    const created = pool;
    const engine = new EngineImpl(resolved, store, (onOutcome) => {
      report = onOutcome;
      return created;
    });
    try {
      await engine.serveMetrics();
      await engine.recoverAll();
    } catch (error) {
      // Also ends the leases the claim may have taken (even one whose answer was lost): a
      // createEngine tried again would otherwise stand by for them until they expired.
      await engine.close().catch(() => undefined);
      // The database went away after it opened (the first claim, the recovery): to the caller
      // the same as one that could not be reached at all, safe to try again.
      throw isRetryable(error) ? new DatabaseUnavailableError('starting the engine', error) : error;
    }
    return engine;
  } catch (error) {
    await pool?.close().catch(() => undefined);
    await store.close().catch(() => undefined);
    throw error;
  }
}
