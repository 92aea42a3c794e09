import { describe, expect, it } from 'vitest';

import type { Effects } from '../../../actors/actor-host.js';
import type { ActorMessage } from '../../../actors/messages.js';
import { WorkflowActor } from '../../../actors/workflow-actor.js';
import type { WorkflowContext } from '../../../actors/workflow-context.js';
import type { TaskRow, WorkflowRow, WorkflowWrite } from '../../../storage/rows.js';
import { actorTestHost } from '../../helpers/actor-host.js';
import { waitFor } from '../../helpers/wait-for.js';

async function callsOneActivity(ctx: WorkflowContext): Promise<unknown> {
  return ctx.activities<{ act(): Promise<string> }>().act();
}

/**
 * An actor for a stored, not yet started `callsOneActivity`, over a host whose WAL commits each
 * write at once (or, with `isHeld`, when `commit()` says): what the actor wrote and what it
 * released, step by step.
 */
function actorWithCommits(isHeld = false): { actor: WorkflowActor; writes: WorkflowWrite[]; released: Effects[]; commit(): void } {
  const released: Effects[] = [];
  const { host, writes, commit } = actorTestHost({
    workflow: callsOneActivity,
    isHeld,
    release: (_id, effects) => released.push(effects),
  });
  const seed = { id: 'w', name: 'callsOneActivity', version: '1', status: 'pending', input: null, error: null } as WorkflowRow;
  return { actor: new WorkflowActor('w', host, { dropped() {}, idleWithoutWrite() {} }, seed), writes, released, commit };
}

/** Pushes `message` and waits until the step it makes has been released. */
async function step(actor: WorkflowActor, released: Effects[], message: ActorMessage): Promise<Effects> {
  const before = released.length;
  actor.push(message);
  return waitFor(() => released.length > before && released.at(-1), `the step after ${message.type}`);
}

describe('WorkflowActor', () => {
  it("ends an activity's stored retry with the activity, even when a first attempt ends it", async () => {
    for (const isRetried of [false, true]) {
      const { actor, writes, released } = actorWithCommits();
      await step(actor, released, { type: 'start' });
      const commandId = writes[0]!.history.find((row) => row.type === 'ActivityScheduled')!.commandId!;
      if (isRetried) {
        const retry = { workflowId: 'w', commandId, attempt: 2 } as TaskRow;
        await step(actor, released, { type: 'activityRetry', commandId, task: retry });
        expect(writes.at(-1)!.tasksUpsert).toEqual([retry]);
      }
      // A recovery that read the history before the retry committed ran the first attempt again.
      const effects = await step(actor, released, { type: 'activityCompleted', commandId, result: '"done"', attempts: 1 });
      expect(effects.finished?.status).toBe('completed');
      expect([writes.at(-1)!.tasksDelete, effects.disarmRetries]).toEqual(isRetried ? [[commandId], [commandId]] : [[], []]);
    }
  });

  it("stores one retry state when two attempts' retries come in one activation", async () => {
    const { actor, writes, released } = actorWithCommits();
    await step(actor, released, { type: 'start' });
    const commandId = writes[0]!.history.find((row) => row.type === 'ActivityScheduled')!.commandId!;
    // A recovery ran the first attempt again after it had failed; both failures wait together.
    const first = { workflowId: 'w', commandId, attempt: 2, visibleAt: 1 } as TaskRow;
    const again = { workflowId: 'w', commandId, attempt: 2, visibleAt: 2 } as TaskRow;
    actor.push({ type: 'activityRetry', commandId, task: first });
    const effects = await step(actor, released, { type: 'activityRetry', commandId, task: again });
    // Two upserts of one row would fail the whole flush (and every workflow in it).
    expect(writes.at(-1)!.tasksUpsert).toEqual([again]);
    // And the step releases the retry it stored, once: one timer to arm, one retry to count.
    expect(effects.retries).toEqual([again]);
  });

  it('leaves an event that reaches it after its end in the inbox, for inspect to show', async () => {
    const { actor, writes, released } = actorWithCommits();
    await step(actor, released, { type: 'start' });
    const commandId = writes[0]!.history.find((row) => row.type === 'ActivityScheduled')!.commandId!;
    const effects = await step(actor, released, { type: 'activityCompleted', commandId, result: '"done"', attempts: 1 });
    expect(effects.finished?.status).toBe('completed');
    const before = writes.length;
    // Stored while the ending step was being committed, delivered after it.
    actor.push({ type: 'event', inboxId: 7, name: 'late', payload: '1' });
    await actor.drained();
    expect(writes.slice(before).flatMap((w) => w.inboxDelete)).toEqual([]);
  });

  it('hands back, when killed for a failed flush, the activity outcomes its discarded writes took', async () => {
    const { actor, writes, released, commit } = actorWithCommits(true);
    actor.push({ type: 'start' });
    await waitFor(() => writes.length === 1, 'the first step');
    commit();
    const commandId = writes[0]!.history.find((row) => row.type === 'ActivityScheduled')!.commandId!;
    const committed: ActorMessage = { type: 'activityRetry', commandId, task: { workflowId: 'w', commandId, attempt: 2 } as TaskRow };
    actor.push(committed);
    await waitFor(() => writes.length === 2, 'the step storing the first retry');
    commit();
    expect(released).toHaveLength(2);
    // Two steps in the WAL at once, neither committed.
    const retried: ActorMessage = { type: 'activityRetry', commandId, task: { workflowId: 'w', commandId, attempt: 3 } as TaskRow };
    actor.push(retried);
    await waitFor(() => writes.length === 3, 'the step storing the second retry');
    const completed: ActorMessage = { type: 'activityCompleted', commandId, result: '"done"', attempts: 3 };
    actor.push(completed);
    await waitFor(() => writes.length === 4, 'the step storing the result');
    // The WAL hands back the writes it discarded: those of the two steps not committed.
    expect(actor.killUncommitted(writes.slice(2))).toEqual([retried, completed]);
    expect(released).toHaveLength(2);
  });
});
