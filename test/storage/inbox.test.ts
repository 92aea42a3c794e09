import pg from 'pg';
import { beforeEach, describe, expect, it } from 'vitest';

import { deleteExpired, flushBatch } from '../../storage/sql/flush-batch.js';
import { firstEventsOfParked, inboxFor, type InsertEventResult, insertEvent } from '../../storage/sql/inbox.js';
import type { Sql, Tables } from '../../storage/sql.js';
import { makeStartRow } from '../helpers/builders.js';
import { type Backend, backends, isWaitingForLock, serverBackends, type TestSchema } from '../helpers/database.js';
import { type TestStore, useStore } from '../helpers/storage.js';
import { waitFor } from '../helpers/wait-for.js';

/** A store holding two workflows: 'open' (pending) and 'done' (completed). */
function useInbox(backend: Backend): () => TestStore {
  const store = useStore(backend);
  beforeEach(async () => {
    const { db, sql, tables } = store();
    await flushBatch(sql, tables, [makeStartRow('open'), makeStartRow('done')], []);
    await db.query(`UPDATE "${db.schema}".workflows SET status = 'completed' WHERE id = 'done'`);
  });
  return store;
}

describe.each(backends)('insertEvent on $name', (backend) => {
  let db: TestSchema;
  let sql: Sql;
  let tables: Tables;
  const store = useInbox(backend);
  beforeEach(() => {
    ({ db, sql, tables } = store());
  });

  it('keeps consumed events and flush tokens for an hour, then deletes them', async () => {
    for (const id of ['old', 'recent', 'waiting']) await insertEvent(sql, tables, 'open', 'go', undefined, id);
    const inbox = `"${db.schema}".inbox`;
    await db.query(`UPDATE ${inbox} SET consumed_at = now() - interval '61 minutes' WHERE event_id = 'old'`);
    await db.query(`UPDATE ${inbox} SET consumed_at = now() - interval '59 minutes' WHERE event_id = 'recent'`);
    await db.query(
      `INSERT INTO "${db.schema}".wal_commits (token, inserted, at)
       VALUES ('recent', '{}', now() - interval '59 minutes')`,
    );
    // More than one chunk's worth of expired tokens.
    await db.query(
      `INSERT INTO "${db.schema}".wal_commits (token, inserted, at)
       SELECT 'old-' || i, '{}', now() - interval '61 minutes' FROM generate_series(1, 12000) AS i`,
    );
    // More than one chunk's worth of expired events too.
    await db.query(
      `INSERT INTO ${inbox} (workflow_id, name, event_id, consumed_at)
       SELECT 'open', 'go', 'bulk-' || i, now() - interval '2 hours' FROM generate_series(1, 6000) AS i`,
    );
    // Events a workflow never took before it ended: kept for an hour after its end, then deleted.
    await flushBatch(sql, tables, [makeStartRow('ended-long-ago'), makeStartRow('ended-lately')], []);
    await db.query(
      `UPDATE "${db.schema}".workflows SET status = 'completed', completed_at = now() - CASE id WHEN 'ended-long-ago' THEN interval '61 minutes' ELSE interval '59 minutes' END
       WHERE id IN ('ended-long-ago', 'ended-lately')`,
    );
    await db.query(
      `INSERT INTO ${inbox} (workflow_id, name, event_id) VALUES ('ended-long-ago', 'late', 'untaken-old'), ('ended-lately', 'late', 'untaken-recent')`,
    );
    // Stopped before it starts, it deletes nothing.
    await deleteExpired(sql, tables, () => true);
    expect(await db.query(`SELECT count(*)::int AS n FROM ${inbox}`)).toEqual([{ n: 6005 }]);
    expect(await db.query(`SELECT count(*)::int AS n FROM "${db.schema}".wal_commits`)).toEqual([{ n: 12001 }]);
    await deleteExpired(sql, tables);
    expect(await db.query(`SELECT event_id FROM ${inbox} ORDER BY id`)).toEqual([
      { event_id: 'recent' },
      { event_id: 'waiting' },
      { event_id: 'untaken-recent' },
    ]);
    expect(await db.query(`SELECT token FROM "${db.schema}".wal_commits`)).toEqual([{ token: 'recent' }]);
    // Within the hour a resent event is known; after it, it is a new one.
    expect(await insertEvent(sql, tables, 'open', 'go', undefined, 'recent')).toEqual({ outcome: 'duplicate', isSame: true });
    expect(await insertEvent(sql, tables, 'open', 'go', undefined, 'old')).toMatchObject({ outcome: 'stored' });
  });

  it('takes an event id as one send to one workflow: the same id for another workflow is its own event', async () => {
    await flushBatch(sql, tables, [makeStartRow('other')], []);
    expect(await insertEvent(sql, tables, 'open', 'shipped', undefined, 'shipped')).toMatchObject({ outcome: 'stored' });
    expect(await insertEvent(sql, tables, 'other', 'shipped', undefined, 'shipped')).toMatchObject({ outcome: 'stored' });
    expect(await insertEvent(sql, tables, 'other', 'shipped', undefined, 'shipped')).toEqual({ outcome: 'duplicate', isSame: true });
    const rows = await db.query(`SELECT workflow_id FROM "${db.schema}".inbox WHERE event_id = 'shipped' ORDER BY id`);
    expect(rows).toEqual([{ workflow_id: 'open' }, { workflow_id: 'other' }]);
  });

  it("leaves a parked workflow's events out of the poll, which it takes none of, and recovers it by its oldest", async () => {
    for (const id of ['parked', 'also-parked']) {
      await flushBatch(sql, tables, [makeStartRow(id)], []);
      await db.query(`UPDATE "${db.schema}".workflows SET status = 'running', error = '{"name":"NonDeterminismError"}' WHERE id = $1`, [id]);
    }
    for (const n of [1, 2]) await insertEvent(sql, tables, 'parked', 'go', undefined, `for-parked-${n}`);
    await insertEvent(sql, tables, 'open', 'go', undefined, 'for-open');
    await insertEvent(sql, tables, 'also-parked', 'go', undefined, 'for-also-parked');
    expect((await inboxFor(sql, tables, ['wf'])).map((e) => e.workflowId)).toEqual(['open']);
    const idOf = async (eventId: string): Promise<number> =>
      Number((await db.query<{ id: string }>(`SELECT id FROM "${db.schema}".inbox WHERE event_id = $1`, [eventId]))[0]!.id);
    const first = await firstEventsOfParked(sql, tables, ['wf']);
    expect(first.map((e) => [e.workflowId, e.id])).toEqual([
      ['also-parked', await idOf('for-also-parked')],
      ['parked', await idOf('for-parked-1')],
    ]);
  });

  it('leaves out of the poll the events of a workflow whose start is still to come', async () => {
    await flushBatch(sql, tables, [{ ...makeStartRow('later'), startAt: Date.now() + 3_600_000 }], []);
    await insertEvent(sql, tables, 'later', 'go', undefined, 'for-later');
    await insertEvent(sql, tables, 'open', 'go', undefined, 'for-open');
    expect((await inboxFor(sql, tables, ['wf'])).map((e) => e.workflowId)).toEqual(['open']);
    await db.query(`UPDATE "${db.schema}".workflows SET start_at = now() - interval '1 second' WHERE id = 'later'`);
    expect((await inboxFor(sql, tables, ['wf'])).map((e) => e.workflowId)).toEqual(['later', 'open']);
  });

  it('stores an event once per id, and refuses missing and finished workflows', async () => {
    const first = await insertEvent(sql, tables, 'open', 'go', '1', 'e1');
    expect(first).toMatchObject({ outcome: 'stored', workflowName: 'wf', unconsumedBefore: [] });
    expect(await insertEvent(sql, tables, 'open', 'go', '1', 'e1')).toEqual({ outcome: 'duplicate', isSame: true });
    // The same id with another payload or name is not a retry of that send: the caller is told.
    expect(await insertEvent(sql, tables, 'open', 'go', '2', 'e1')).toEqual({ outcome: 'duplicate', isSame: false });
    expect(await insertEvent(sql, tables, 'open', 'went', '1', 'e1')).toEqual({ outcome: 'duplicate', isSame: false });
    expect(await insertEvent(sql, tables, 'open', 'go', undefined, 'e1')).toEqual({ outcome: 'duplicate', isSame: false });
    expect(await insertEvent(sql, tables, 'nobody', 'go', '1', 'e2')).toEqual({ outcome: 'refused', status: 'missing' });
    expect(await insertEvent(sql, tables, 'done', 'go', '1', 'e3')).toEqual({ outcome: 'refused', status: 'completed' });
    const rows = await db.query(`SELECT workflow_id, event_id FROM "${db.schema}".inbox ORDER BY id`);
    expect(rows).toEqual([{ workflow_id: 'open', event_id: 'e1' }]);
    // The ones stored before and not consumed, for the engine to hand over first: e1, until consumed.
    const second = await insertEvent(sql, tables, 'open', 'go', '1', 'e4');
    expect(second).toMatchObject({ outcome: 'stored', unconsumedBefore: [first.outcome === 'stored' ? first.id : -1] });
    await db.query(`UPDATE "${db.schema}".inbox SET consumed_at = now()`);
    expect(await insertEvent(sql, tables, 'open', 'go', '1', 'e5')).toMatchObject({ outcome: 'stored', unconsumedBefore: [] });
  });

  it('takes a resend as a duplicate after its event ended the workflow', async () => {
    expect(await insertEvent(sql, tables, 'open', 'go', '1', 'e1')).toMatchObject({ outcome: 'stored' });
    await db.query(`UPDATE "${db.schema}".inbox SET consumed_at = now()`);
    await db.query(`UPDATE "${db.schema}".workflows SET status = 'completed' WHERE id = 'open'`);
    expect(await insertEvent(sql, tables, 'open', 'go', '1', 'e1')).toEqual({ outcome: 'duplicate', isSame: true });
  });
});

describe.each(serverBackends)('insertEvent racing a concurrent send on $name', (backend) => {
  const store = useInbox(backend);

  it('refuses a send racing the step that ends the workflow, once that step commits, rather than storing it for nobody', async () => {
    const { db, sql, tables } = store();
    const ending = new pg.Client({ connectionString: db.database as string });
    await ending.connect();
    try {
      await ending.query('BEGIN');
      await ending.query(`UPDATE "${db.schema}".workflows SET status = 'completed', completed_at = now() WHERE id = 'open'`);
      const racing = insertEvent(sql, tables, 'open', 'go', '1', 'late');
      await waitFor(() => isWaitingForLock(db, 'FOR SHARE'), 'the racing send to wait for the ending step');
      await ending.query('COMMIT');
      expect(await racing).toEqual({ outcome: 'refused', status: 'completed' });
      expect(await db.query(`SELECT count(*)::int AS n FROM "${db.schema}".inbox`)).toEqual([{ n: 0 }]);
    } finally {
      await ending.end();
    }
  });

  /** Sends `payload` under the id of another send that commits only once this one waits for it. */
  async function behindUncommittedSend(payload: string): Promise<{ racing: InsertEventResult; stored: unknown[] }> {
    const { db, sql, tables } = store();
    const other = new pg.Client({ connectionString: db.database as string });
    await other.connect();
    try {
      await other.query('BEGIN');
      await other.query(
        `INSERT INTO "${db.schema}".inbox (workflow_id, name, payload, event_id) VALUES ('open', 'go', '1', 'e1')`,
      );
      const racing = insertEvent(sql, tables, 'open', 'go', payload, 'e1');
      // The racing insert waits on the unique index for the other transaction to end.
      await waitFor(() => isWaitingForLock(db, 'INSERT INTO'), 'the racing send to wait for the uncommitted one');
      await other.query('COMMIT');
      return { racing: await racing, stored: await db.query(`SELECT payload FROM "${db.schema}".inbox`) };
    } finally {
      await other.end();
    }
  }

  it('takes a send whose id another, uncommitted send holds as a duplicate once that one commits', async () => {
    expect(await behindUncommittedSend('1')).toEqual({ racing: { outcome: 'duplicate', isSame: true }, stored: [{ payload: '1' }] });
  });

  it('tells a send whose id another, uncommitted send holds with another payload that it is not the same event', async () => {
    // The first send's row is not in the racing statement's snapshot: taken for a retry, the
    // second event would be acknowledged and never stored.
    expect(await behindUncommittedSend('2')).toEqual({ racing: { outcome: 'duplicate', isSame: false }, stored: [{ payload: '1' }] });
  });
});
