/**
 * The short CI version of the kill-chaos driver (`npm run chaos` runs the long one): an engine in
 * a child process, SIGKILLed 3 times at random moments while ~60 workflows of mixed kinds stream
 * in (half started by a client, half by the engine under fire), then checked from the database
 * and from the activities' side effects. First, the checks themselves: a checker that passes
 * everything would prove nothing. Last, the short version of the lease-chaos driver
 * (`npm run chaos:leases` runs a longer one): three engines registering the same workflows on one
 * schema, and one of each fault on whichever holds the leases (SIGKILL, SIGSTOP past its lease,
 * SIGTERM, a stall after which the first engine takes its names back under a new epoch), checked
 * the same way plus a fencing audit: triggers record each row's writer and the lease at that
 * moment, and no engine may write for a name whose lease it did not hold.
 */
import { describe, expect, it } from 'vitest';

import { type EffectRow, evaluateRun, type HistoryRow, type RunData, type RunRecord, type WorkflowRow } from '../fixtures/chaos-checks.js';
import { runKillChaos } from '../fixtures/chaos-kill.js';
import { runLeaseChaos } from '../fixtures/chaos-lease.js';
import { expectedResult } from '../fixtures/chaos-workflows.js';
import { serverBackends } from '../helpers/database.js';

/** What a fault-free run of chaosSeq n=`n` leaves in the database. */
function healthy(id: string, n: number): RunData {
  const workflows: WorkflowRow[] = [{ id, name: 'chaosSeq', status: 'completed', result: String(expectedResult('chaosSeq', n)), error: null }];
  const row = (seq: number, activation: number, type: string, commandId: number | null, payload: string | null = null): HistoryRow => ({
    workflow_id: id,
    seq,
    activation,
    type,
    command_id: commandId,
    payload,
  });
  const history = [
    row(1, 1, 'WorkflowStarted', null),
    row(2, 1, 'ActivityScheduled', 1),
    row(3, 2, 'ActivityCompleted', 1),
    row(4, 2, 'ActivityScheduled', 2),
    row(5, 3, 'ActivityCompleted', 2),
    row(6, 3, 'ActivityScheduled', 3),
    row(7, 4, 'ActivityCompleted', 3),
    row(8, 4, 'WorkflowCompleted', null, JSON.stringify({ result: expectedResult('chaosSeq', n) })),
  ];
  const effects: EffectRow[] = [1, 2, 3].map((c) => ({ activity_id: `${id}/${c}`, workflow_id: id, runs: 1, scheduled_seen: true, pids: [100] }));
  return { workflows, history, effects, timers: [], tasks: [], orphanHistory: [] };
}

const acked = (id: string, n: number): RunRecord => ({ acked: new Map([[id, { kind: 'chaosSeq', n }]]), failedStarts: new Map() });

describe('the chaos checks', () => {
  it('pass a fault-free run and count re-runs', () => {
    const data = healthy('w-1', 5);
    data.effects[0]!.runs = 3;
    data.effects[0]!.pids = [100, 200, 200];
    const report = evaluateRun(acked('w-1', 5), data);
    expect(report).toMatchObject({ workflows: 1, lost: [], doubled: [], reruns: 2, rerunActivities: 1, rerunsInSameProcess: 1, violations: [] });
  });

  it('flag an acknowledged workflow that is missing, unfinished or wrong as lost', () => {
    expect(evaluateRun(acked('w-1', 5), { ...healthy('w-1', 5), workflows: [] }).lost).toEqual(['w-1']);
    const running = healthy('w-1', 5);
    running.workflows[0]!.status = 'running';
    running.history.pop();
    expect(evaluateRun(acked('w-1', 5), running).lost).toEqual(['w-1']);
    const wrong = healthy('w-1', 5);
    wrong.workflows[0]!.result = '42';
    const report = evaluateRun(acked('w-1', 5), wrong);
    expect(report.lost).toEqual(['w-1']);
    expect(report.violations.join('\n')).toMatch(/completed with 42, a fault-free run gives/);
  });

  it('flag two terminal events or an activity completed twice as doubled', () => {
    const twice = healthy('w-1', 5);
    twice.history.push({ ...twice.history.at(-1)!, seq: 9 });
    expect(evaluateRun(acked('w-1', 5), twice).doubled).toEqual(['w-1']);
    const activity = healthy('w-1', 5);
    activity.history.splice(3, 0, { ...activity.history[2]! });
    activity.history.forEach((e, i) => (e.seq = i + 1));
    expect(evaluateRun(acked('w-1', 5), activity).doubled).toEqual(['w-1']);
  });

  it('flag a history with a gap', () => {
    const gap = healthy('w-1', 5);
    gap.history[4]!.seq = 12;
    expect(evaluateRun(acked('w-1', 5), gap).violations.join('\n')).toMatch(/seqs are not 1\.\.8/);
  });

  it('flag effects of uncommitted steps and activities run before their scheduling committed', () => {
    const stray = healthy('w-1', 5);
    stray.effects.push({ activity_id: 'w-1/9', workflow_id: 'w-1', runs: 1, scheduled_seen: false, pids: [100] });
    const violations = evaluateRun(acked('w-1', 5), stray).violations.join('\n');
    expect(violations).toMatch(/w-1\/9 applied, but no committed ActivityScheduled holds it/);
    expect(violations).toMatch(/w-1\/9 ran before its ActivityScheduled event was committed/);
    const missing = healthy('w-1', 5);
    missing.effects.pop();
    expect(evaluateRun(acked('w-1', 5), missing).violations.join('\n')).toMatch(/w-1\/3 completed in history but its effect was never applied/);
  });

  it('accept a failed start only absent or fully valid, and flag rows nobody started', () => {
    const failed: RunRecord = { acked: new Map(), failedStarts: new Map([['w-1', { kind: 'chaosSeq', n: 5 }]]) };
    expect(evaluateRun(failed, { ...healthy('w-1', 5), workflows: [], history: [], effects: [] }).violations).toEqual([]);
    const created = evaluateRun(failed, healthy('w-1', 5));
    expect(created).toMatchObject({ violations: [], failedStartsCreated: ['w-1'] });
    const half = healthy('w-1', 5);
    half.workflows[0]!.status = 'pending';
    half.history = [];
    half.effects = [];
    expect(evaluateRun(failed, half).violations).not.toEqual([]);
    expect(evaluateRun({ acked: new Map(), failedStarts: new Map() }, healthy('w-1', 5)).violations.join('\n')).toMatch(
      /w-1 exists .* no start of it was ever made/,
    );
    const taken: RunRecord = {
      acked: new Map(),
      failedStarts: new Map([['w-1', { kind: 'chaosSeq', n: 5, error: { name: 'WorkflowAlreadyExistsError', code: 'DURAFLOW_WORKFLOW_ALREADY_EXISTS', message: '' } }]]),
    };
    expect(evaluateRun(taken, healthy('w-1', 5)).violations.join('\n')).toMatch(/WorkflowAlreadyExistsError, yet the id was fresh/);
  });
});

describe.each(serverBackends)('kill chaos on $name', () => {
  it('finishes every acknowledged workflow exactly once through SIGKILLs and restarts', async () => {
    const result = await runKillChaos({
      kills: 3,
      workflows: 60,
      maxKillMs: 1500,
      spreadMs: 3000,
      deadlineMs: 30_000,
      database: process.env.DATABASE_URL,
    });
    console.log(`kill chaos (seed ${result.seed}): ${result.summary}\n${result.calls}`);
    if (result.violations.length > 0) console.log(`logs: ${result.logFile}\n${result.violations.join('\n')}`);
    expect(result.violations).toEqual([]);
    expect(result.kills).toBe(3);
    expect(result.report.lost).toEqual([]);
    expect(result.report.doubled).toEqual([]);
  });
});

describe.each(serverBackends)('several engines under faults on $name', () => {
  it('lose, double and mis-fence nothing through kills (seen here, and as if elsewhere), a stop, a graceful close and a stale regain', async () => {
    const exitCode = await runLeaseChaos({
      engines: 3,
      faults: 5,
      workflows: 60,
      leaseTtlMs: 1500,
      actions: ['kill', 'far', 'stop', 'term', 'swap'],
      database: process.env.DATABASE_URL,
    });
    expect(exitCode, 'violations are printed above').toBe(0);
  });
});
