/** Builders for storage-level tests: rows and writes as an actor would produce them. */
import { emptyWrite, type NewWorkflowRow, type TaskRow, type WorkflowWrite } from '../../storage/rows.js';

export function makeStartRow(id: string): NewWorkflowRow {
  const now = Date.now();
  return { id, startToken: `token-${id}-${Math.random()}`, name: 'wf', version: '1', input: '{"n":1}', startAt: now, createdAt: now };
}

/** A write appending history rows `from + 1` … `from + count`, as an actor's step would. */
export function makeWrite(
  workflowId: string,
  from: number,
  count: number,
  extra: Partial<WorkflowWrite> = {},
): WorkflowWrite {
  const w = emptyWrite(workflowId, 'wf');
  for (let i = 1; i <= count; i++) {
    w.history.push({ seq: from + i, activation: 1, type: 'TimerFired', commandId: from + i, payload: null, at: 1_000 });
  }
  return { ...w, ...extra };
}

export function makeTask(workflowId: string, commandId: number, attempt: number): TaskRow {
  return {
    workflowId,
    commandId,
    name: 'charge',
    input: '1',
    options: '{}',
    attempt,
    visibleAt: 2_000,
    scheduledAt: 1_000,
    lastFailure: null,
  };
}

/** What `fn` throws (the test fails if it does not). */
export function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a throw');
}
