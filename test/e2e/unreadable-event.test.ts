/**
 * An event whose stored payload was changed by hand into text that is not JSON: the workflow's
 * actor fails with UnreadableStateError when the event reaches it and is rebuilt after a growing
 * pause; an activity attempt that ends meanwhile is kept for the rebuilt actor, not run again, and
 * the workflow goes on once the payload is repaired.
 */
import { describe, expect, it } from 'vitest';

import { ErrorCode, UnreadableStateError, type WorkflowContext } from 'duraflow';

import { backends, useSchema } from '../helpers/database.js';
import { loggerKeeping, startEngine } from '../helpers/engines.js';
import { heldActivity } from '../helpers/held-activity.js';
import { waitFor } from '../helpers/wait-for.js';

type Held = { held(): Promise<string> };

async function activityAndEvent(ctx: WorkflowContext): Promise<[string, unknown]> {
  const running = ctx.activities<Held>().held();
  const go = await ctx.waitForEvent('go');
  return [await running, go];
}

describe.each(backends)('an unreadable event on $name', (backend) => {
  const schema = useSchema(backend);

  it('fails the actor with UnreadableStateError naming the event, keeps an activity result that comes meanwhile, and runs on once the payload is repaired', async () => {
    const db = schema();
    const hold = heldActivity();
    let runs = 0;
    const failures = loggerKeeping('actor failed; rebuilding it');
    const engine = await startEngine(db, {
      workflows: { activityAndEvent },
      inlineActivities: { held: (input, ctx) => (runs++, hold.activity(input as never, ctx)) },
      logger: failures.logger,
      pollIntervalMs: 50,
    });
    try {
      await engine.startWorkflow(activityAndEvent, undefined, { workflowId: 'both' });
      await waitFor(async () => (await engine.inspect('both')).waitingOn.events.length > 0, 'the wait for the event');
      // Stored as no send would store it: the engine reads it from the inbox at its next poll.
      await db.query(`INSERT INTO "${db.schema}".inbox (workflow_id, name, payload, event_id) VALUES ('both', 'go', '{"ok":', 'by-hand')`);
      await waitFor(() => failures.at.length >= 2, 'two failed steps', 10_000);
      // Ends while the actor waits out a pause: the rebuild hands the result and the event to the
      // new actor together, and it fails on the event again.
      hold.release();
      const failedBefore = failures.at.length;
      await waitFor(() => failures.at.length >= failedBefore + 2, 'two more failed steps', 20_000);
      expect(runs).toBe(1);
      for (const error of failures.errors) {
        expect(error).toBeInstanceOf(UnreadableStateError);
        expect(error).toMatchObject({ code: ErrorCode.UnreadableState, workflowId: 'both', field: 'queuedEvents.payload' });
        expect((error as Error).message).toContain('(event "go")');
      }
      await db.query(`UPDATE "${db.schema}".inbox SET payload = '{"ok":true}' WHERE event_id = 'by-hand'`);
      expect(await engine.result('both', { timeoutMs: 20_000 })).toEqual(['done', { ok: true }]);
      expect(runs).toBe(1);
    } finally {
      await engine.close();
    }
  });
});
