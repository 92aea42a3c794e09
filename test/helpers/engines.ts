import { expect } from 'vitest';

import { type Client, createClient, createEngine, type Engine, type EngineOptions, type WorkflowState } from 'duraflow';

import type { TestSchema } from './database.js';
import { waitFor } from './wait-for.js';

/** Engines and clients opened by the running test and not yet closed. */
export const trackedEngines = new Set<{ close(): Promise<void> }>();

function track<T extends { close(): Promise<void> }>(item: T): T {
  trackedEngines.add(item);
  const close = item.close.bind(item);
  item.close = async () => {
    trackedEngines.delete(item);
    await close();
  };
  return item;
}

/** Keeps expected engine errors (parked workflows, say) out of the test output; DURAFLOW_LOG=1 shows them. */
export const quietLogger = {
  debug() {},
  info() {},
  warn(obj: object, msg?: string) {
    if (process.env.DURAFLOW_LOG) console.warn(msg, obj);
  },
  error(obj: object, msg?: string) {
    if (process.env.DURAFLOW_LOG) console.error(msg, obj);
  },
};

/** Compiled test activities (tests run against the built package). */
export const fixtureActivities = new URL('../../dist/test/fixtures/activities.js', import.meta.url);

/** A quiet logger that keeps the errors logged with `message`, and when they came. */
export function loggerKeeping(message: string): { logger: typeof quietLogger; errors: unknown[]; at: number[] } {
  const errors: unknown[] = [];
  const at: number[] = [];
  const logger = {
    ...quietLogger,
    error(obj: object, msg?: string) {
      if (msg === message) {
        errors.push((obj as { err?: unknown }).err);
        at.push(performance.now());
      }
      quietLogger.error(obj, msg);
    },
  };
  return { logger, errors, at };
}

/** An engine on the test's schema; closed by the test or, failing that, by the leak check. */
export async function startEngine(db: TestSchema, options: Omit<EngineOptions, 'database' | 'schema'>): Promise<Engine> {
  return track(
    await createEngine({
      activityThreads: 2,
      pollIntervalMs: 500,
      logger: quietLogger,
      ...options,
      database: db.database,
      schema: db.schema,
    }),
  );
}

export async function openClient(db: TestSchema): Promise<Client> {
  return track(await createClient({ database: db.database, schema: db.schema, logger: quietLogger }));
}

/** The current value of an engine metric, summed over its label values (0 before any). */
export async function readMetric(engine: Engine, name: string): Promise<number> {
  let total = 0;
  for (const value of (await engine.metrics.getSingleMetric(name)!.get()).values) total += value.value;
  return total;
}

/**
 * Waits until `workflowId` is parked: still running, with a NonDeterminismError stored. Returns its
 * state for the test's own checks.
 */
export async function waitUntilParked(engine: Engine | Client, workflowId: string): Promise<WorkflowState> {
  const parked = await waitFor(async () => {
    const state = await engine.inspect(workflowId);
    return state.error && state;
  }, `${workflowId} to be parked`);
  expect(parked.status).toBe('running');
  expect(parked.error).toMatchObject({ name: 'NonDeterminismError', code: 'DURAFLOW_NON_DETERMINISM' });
  return parked;
}
