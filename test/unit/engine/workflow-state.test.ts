import { describe, expect, it } from 'vitest';

import { buildWorkflowState, type StoredState } from '../../../engine/workflow-state.js';
import type { StoredHistoryRow, WorkflowRow } from '../../../storage/rows.js';

const AT = new Date(0);

function row(): WorkflowRow {
  return {
    id: 'w',
    name: 'fan',
    version: '1',
    status: 'running',
    input: null,
    result: null,
    error: null,
    vars: '{}',
    start_at: AT,
    created_at: AT,
    started_at: AT,
    completed_at: null,
  };
}

/** A workflow that scheduled `count` activities in its first step, every one waiting for a retry. */
function fanOutInRetry(count: number): StoredState {
  const history: StoredHistoryRow[] = [
    { seq: 1, activation: 1, type: 'WorkflowStarted', command_id: null, payload: '{"workflowName":"fan","version":"1"}', at: AT },
  ];
  for (let commandId = 1; commandId <= count; commandId++) {
    history.push({ seq: commandId + 1, activation: 1, type: 'ActivityScheduled', command_id: commandId, payload: '{"activityName":"charge","options":{}}', at: AT });
  }
  const tasks = Array.from({ length: count }, (_, i) => ({
    commandId: count - i,
    attempt: 2,
    visibleAt: 1_000 + i,
    lastFailure: '{"name":"Error","message":"declined"}',
  }));
  return { row: row(), history, tasks, timers: [], inbox: [] };
}

describe('buildWorkflowState', () => {
  it('gives each waiting activity its own retry state', () => {
    const state = buildWorkflowState(fanOutInRetry(3), undefined, 0);
    expect(state.waitingOn.activities).toEqual([1, 2, 3].map((commandId) => ({
      commandId,
      activityName: 'charge',
      attempt: 2,
      nextAttemptAt: new Date(1_000 + 3 - commandId),
      lastFailure: { name: 'Error', message: 'declined' },
    })));
  });

  it('reads each retry state a bounded number of times, not once per waiting activity', () => {
    const count = 2_000;
    const stored = fanOutInRetry(count);
    let reads = 0;
    // Counts reads of the tasks by index, as a search or a pass over the list makes them.
    stored.tasks = new Proxy(stored.tasks, {
      get(target, key, receiver) {
        if (typeof key === 'string' && /^\d+$/.test(key)) reads++;
        return Reflect.get(target, key, receiver) as unknown;
      },
    });
    const state = buildWorkflowState(stored, undefined, 0);
    expect(state.waitingOn.activities.filter((a) => a.attempt === 2)).toHaveLength(count);
    // A search of the list per activity reads about count * count / 2 of them.
    expect(reads).toBeLessThanOrEqual(2 * count);
  });
});
