import pg from 'pg';
import { describe, expect, it } from 'vitest';

import { LeaseKeeper } from '../../engine/lease-keeper.js';
import { flushBatch } from '../../storage/sql/flush-batch.js';
import { type Claimant, claimLeases, LeaseLostError, readLeases, releaseLeases } from '../../storage/sql/leases.js';
import type { Sql } from '../../storage/sql.js';
import { Wal } from '../../storage/wal.js';
import { makeStartRow, makeWrite } from '../helpers/builders.js';
import { backends, isWaitingForLock, serverBackends, type TestSchema } from '../helpers/database.js';
import { quietLogger } from '../helpers/engines.js';
import { useStore } from '../helpers/storage.js';
import { waitFor } from '../helpers/wait-for.js';

const claimant = (owner: string, more: Partial<Claimant> = {}): Claimant => ({
  owner,
  processIdentity: undefined,
  isExclusive: false,
  endedHolders: [],
  ...more,
});

/** A flush's options with the lease check of `owner` at `epoch` of 'wf' (it rides on the token). */
const fenced = (owner: string, epoch: string) => ({ token: `t-${Math.random()}`, fence: { owner, names: ['wf'], epochs: [epoch] } });

describe.each(backends)('workflow leases on $name', (backend) => {
  const store = useStore(backend);

  it('gives a name to one owner at a time, raising the epoch at each change of hands', async () => {
    const { sql, tables } = store();
    const claim = (owner: string, names: string[], isExclusive = false) => claimLeases(sql, tables, names, claimant(owner, { isExclusive }), 60_000);

    expect(await claim('a', ['x', 'y'])).toEqual(new Map([['x', '1'], ['y', '1']]));
    // Held and unexpired: another engine gets nothing; the holder renews under the same epoch.
    expect(await claim('b', ['x', 'y', 'z'])).toEqual(new Map([['z', '1']]));
    expect(await claim('a', ['x', 'y'])).toEqual(new Map([['x', '1'], ['y', '1']]));
    // Released: the next claim takes it under a new epoch, and the old holder cannot renew it.
    await releaseLeases(sql, tables, ['x'], 'a');
    expect(await claim('b', ['x'])).toEqual(new Map([['x', '2']]));
    expect(await claim('a', ['x', 'y'])).toEqual(new Map([['y', '1']]));
    // Only the holder can release.
    await releaseLeases(sql, tables, ['x'], 'a');
    expect(await claim('a', ['x'])).toEqual(new Map());
    // An engine that owns the database outright (the embedded one) takes it whatever its lease.
    expect(await claim('c', ['x'], true)).toEqual(new Map([['x', '3']]));
  });

  it('takes an expired lease', async () => {
    const { sql, tables, db } = store();
    await claimLeases(sql, tables, ['x'], claimant('a'), 60_000);
    await db.query(`UPDATE "${db.schema}".leases SET expires_at = now() - interval '1 second'`);
    expect(await claimLeases(sql, tables, ['x'], claimant('b'), 60_000)).toEqual(new Map([['x', '2']]));
  });

  it('takes an unexpired lease whose holder the claimant saw end, and records where each holder runs', async () => {
    const { sql, tables } = store();
    await claimLeases(sql, tables, ['x', 'y'], claimant('a', { processIdentity: 'boot ns 10 100' }), 60_000);
    // Another holder named as ended changes nothing, nor does the holder with a process its row
    // no longer names (rewritten since the claimant read it); the holder named with the process
    // its row names is taken over under a new epoch.
    expect(await claimLeases(sql, tables, ['x'], claimant('b', { endedHolders: [{ owner: 'c', process: 'boot ns 10 100' }] }), 60_000)).toEqual(
      new Map(),
    );
    expect(await claimLeases(sql, tables, ['x'], claimant('b', { endedHolders: [{ owner: 'a', process: 'boot ns 10 99' }] }), 60_000)).toEqual(
      new Map(),
    );
    expect(
      await claimLeases(sql, tables, ['x'], claimant('b', { processIdentity: 'boot ns 11 200', endedHolders: [{ owner: 'a', process: 'boot ns 10 100' }] }), 60_000),
    ).toEqual(new Map([['x', '2']]));
    expect((await readLeases(sql, tables)).map((l) => [l.name, l.owner, l.process_identity, l.is_expired])).toEqual([
      ['x', 'b', 'boot ns 11 200', false],
      ['y', 'a', 'boot ns 10 100', false],
    ]);
  });

  it('refuses a flush whose lease epoch is not the current one, and stores none of it', async () => {
    const { sql, tables, db } = store();
    await claimLeases(sql, tables, ['other'], claimant('a'), 60_000);
    await flushBatch(sql, tables, [makeStartRow('w1')], []);
    // The write's name has no lease at all.
    const refused = flushBatch(sql, tables, [], [makeWrite('w1', 0, 2)], fenced('a', '1'));
    await expect(refused).rejects.toBeInstanceOf(LeaseLostError);
    await expect(refused).rejects.toThrow(/^this engine no longer holds the lease of 1 workflow name\(s\) it wrote$/);
    await claimLeases(sql, tables, ['wf'], claimant('a'), 60_000);
    // Another owner, or the right owner under an old epoch, is refused too.
    await expect(
      flushBatch(sql, tables, [], [makeWrite('w1', 0, 2)], fenced('b', '1')),
    ).rejects.toBeInstanceOf(LeaseLostError);
    await db.query(`UPDATE "${db.schema}".leases SET epoch = 2 WHERE name = 'wf'`);
    await expect(
      flushBatch(sql, tables, [], [makeWrite('w1', 0, 2)], fenced('a', '1')),
    ).rejects.toBeInstanceOf(LeaseLostError);
    expect(await db.query(`SELECT * FROM "${db.schema}".history`)).toEqual([]);
    await flushBatch(sql, tables, [], [makeWrite('w1', 0, 2)], fenced('a', '2'));
    expect(await db.query(`SELECT seq FROM "${db.schema}".history ORDER BY seq`)).toEqual([{ seq: 1 }, { seq: 2 }]);
  });

  it('checks every name of a flush that writes workflows of several, one lease row or many', async () => {
    const { sql, tables, db } = store();
    await flushBatch(sql, tables, [makeStartRow('w1'), { ...makeStartRow('w2'), name: 'other' }], []);
    const epochs = await claimLeases(sql, tables, ['wf', 'other'], claimant('a'), 60_000);
    const both = { owner: 'a', names: ['wf', 'other'], epochs: [epochs.get('wf')!, epochs.get('other')!] };
    const writes = [makeWrite('w1', 0, 1), { ...makeWrite('w2', 0, 1), workflowName: 'other' }];
    await flushBatch(sql, tables, [], writes, { token: 't-both', fence: both });
    // One of the two taken: the whole flush is refused, as with one name.
    await db.query(`UPDATE "${db.schema}".leases SET epoch = epoch + 1 WHERE name = 'other'`);
    const refused = flushBatch(sql, tables, [], [makeWrite('w1', 1, 1), { ...makeWrite('w2', 1, 1), workflowName: 'other' }], {
      token: 't-stale',
      fence: both,
    });
    await expect(refused).rejects.toThrow(/^this engine no longer holds the lease of 1 workflow name\(s\) it wrote$/);
    expect(await db.query(`SELECT workflow_id, seq FROM "${db.schema}".history ORDER BY 1, 2`)).toEqual([
      { workflow_id: 'w1', seq: 1 },
      { workflow_id: 'w2', seq: 1 },
    ]);
  });

  it('stamps each write with the epoch it was appended under: a later claim does not make it valid', async () => {
    const { sql, tables, db } = store();
    await flushBatch(sql, tables, [makeStartRow('w1')], []);
    const epochs = new Map([['wf', '1']]);
    await claimLeases(sql, tables, ['wf'], claimant('a'), 60_000);
    const failed: unknown[] = [];
    const wal = new Wal({
      sql,
      tables,
      highWaterEvents: 1000,
      lease: { owner: 'a', epochOf: (name) => epochs.get(name) },
      onFlushFailed: (_ids, error) => failed.push(error),
    });
    // The lease changed hands twice meanwhile; the write is appended under epoch 1, and this
    // engine learns of epoch 3 before the flush: the write was built on what it knew under 1.
    await db.query(`UPDATE "${db.schema}".leases SET epoch = 3`);
    wal.enqueue(makeWrite('w1', 0, 1));
    epochs.set('wf', '3');
    await wal.drain();
    expect(failed).toEqual([expect.any(LeaseLostError)]);
    wal.enqueue(makeWrite('w1', 0, 1));
    await wal.close();
    expect(await db.query(`SELECT seq FROM "${db.schema}".history`)).toEqual([{ seq: 1 }]);
  });
  it('fails only the writes of a name whose lease was lost; the others in the same flush commit', async () => {
    const { sql, tables, db } = store();
    await flushBatch(sql, tables, [makeStartRow('w1'), { ...makeStartRow('w2'), name: 'other' }], []);
    const epochs = await claimLeases(sql, tables, ['wf', 'other'], claimant('a'), 60_000);
    const failed: [string[], unknown][] = [];
    const wal = new Wal({
      sql,
      tables,
      highWaterEvents: 1000,
      lease: { owner: 'a', epochOf: (name) => epochs.get(name) },
      onFlushFailed: (ids, error) => failed.push([[...ids], error]),
    });
    // Another engine took 'wf'; this one has not learnt it yet.
    await db.query(`UPDATE "${db.schema}".leases SET owner = 'b', epoch = epoch + 1 WHERE name = 'wf'`);
    const durable: string[] = [];
    wal.enqueue(makeWrite('w1', 0, 1), (isRefused) => durable.push(`w1 ${isRefused}`));
    wal.enqueue({ ...makeWrite('w2', 0, 2), workflowName: 'other' }, (isRefused) => durable.push(`w2 ${isRefused}`));
    await wal.drain();
    expect(failed).toEqual([[['w1'], expect.any(LeaseLostError)]]);
    expect(durable).toEqual(['w2 false']);
    expect(await db.query(`SELECT workflow_id, seq FROM "${db.schema}".history ORDER BY 1, 2`)).toEqual([
      { workflow_id: 'w2', seq: 1 },
      { workflow_id: 'w2', seq: 2 },
    ]);
    // The name comes back: the failed workflow's next write, built anew, goes in the next flush.
    await db.query(`UPDATE "${db.schema}".leases SET expires_at = now() - interval '1 second' WHERE name = 'wf'`);
    for (const [name, epoch] of await claimLeases(sql, tables, ['wf'], claimant('a'), 60_000)) epochs.set(name, epoch);
    wal.enqueue(makeWrite('w1', 0, 1), (isRefused) => durable.push(`w1 ${isRefused}`));
    expect(await wal.enqueueStart(makeStartRow('w3'))).toBe(true);
    await wal.close();
    expect(durable).toEqual(['w2 false', 'w1 false']);
    expect(await db.query(`SELECT workflow_id, seq FROM "${db.schema}".history WHERE workflow_id = 'w1'`)).toEqual([
      { workflow_id: 'w1', seq: 1 },
    ]);
  });

  it('stores the starts of a flush the lease check refused, in the next flush', async () => {
    const { sql, tables, db } = store();
    await flushBatch(sql, tables, [makeStartRow('w1')], []);
    const failed: unknown[] = [];
    // This engine holds no lease for 'wf': a write of it fails the check, a start needs none.
    const wal = new Wal({ sql, tables, highWaterEvents: 1000, lease: { owner: 'a', epochOf: () => undefined }, onFlushFailed: (_ids, error) => failed.push(error) });
    wal.enqueue(makeWrite('w1', 0, 1));
    const stored = wal.enqueueStart(makeStartRow('s1'));
    expect(await stored).toBe(true);
    await wal.close();
    expect(failed).toEqual([expect.any(LeaseLostError)]);
    expect(await db.query(`SELECT id FROM "${db.schema}".workflows ORDER BY id`)).toEqual([{ id: 's1' }, { id: 'w1' }]);
    expect(await db.query(`SELECT seq FROM "${db.schema}".history`)).toEqual([]);
  });

  it('ends on close the leases a first claim took whose answer was lost', async () => {
    const { sql, tables } = store();
    // The claim commits, then its connection breaks before the answer arrives.
    const faulty = failingOnce(sql, 'AS l (name, owner, epoch', { runFirst: true });
    const keeper = new LeaseKeeper({ sql: faulty, tables, names: ['wf'], ttlMs: 60_000, isExclusive: false, logger: quietLogger, onChange() {} });
    await expect(keeper.start()).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(keeper.held).toEqual([]);
    expect(await keeper.close()).toBe(true);
    const [lease] = await readLeases(sql, tables);
    expect({ owner: lease!.owner, isExpired: lease!.is_expired }).toEqual({ owner: keeper.owner, isExpired: true });
  });

  it('tries the release at close again when its connection breaks', async () => {
    const { sql, tables } = store();
    const faulty = failingOnce(sql, 'SET expires_at = now()', { runFirst: false });
    const keeper = new LeaseKeeper({ sql: faulty, tables, names: ['wf'], ttlMs: 60_000, isExclusive: false, logger: quietLogger, onChange() {} });
    await keeper.start();
    expect(keeper.held).toEqual(['wf']);
    expect(await keeper.close()).toBe(true);
    const [lease] = await readLeases(sql, tables);
    expect({ owner: lease!.owner, isExpired: lease!.is_expired }).toEqual({ owner: keeper.owner, isExpired: true });
  });
});

// Two connections at once: a server.
describe.each(serverBackends)('taking a lease over while flushes run on $name', (backend) => {
  const store = useStore(backend);

  it('refuses a flush that comes while a takeover is under way: it sees the new epoch once that commits', async () => {
    const { sql, tables, db } = store();
    await flushBatch(sql, tables, [makeStartRow('w1')], []);
    await claimLeases(sql, tables, ['wf'], claimant('a'), 60_000);
    const takeover = await openTransaction(db);
    try {
      await takeover.query(`UPDATE "${db.schema}".leases SET owner = 'b', epoch = epoch + 1`);
      const flush = flushBatch(sql, tables, [], [makeWrite('w1', 0, 2)], fenced('a', '1'));
      const outcome = flush.then(() => 'stored', (error: unknown) => error);
      await waitFor(() => isWaitingForLock(db, 'wal_commits'), 'the flush to wait for the takeover');
      await takeover.commit();
      expect(await outcome).toBeInstanceOf(LeaseLostError);
    } finally {
      await takeover.rollback();
    }
    expect(await db.query(`SELECT * FROM "${db.schema}".history WHERE workflow_id = 'w1'`)).toEqual([]);
  });

  it('makes a takeover wait for a flush in progress, which commits under its epoch', async () => {
    const { sql, tables, db } = store();
    await flushBatch(sql, tables, [makeStartRow('w1')], []);
    await claimLeases(sql, tables, ['wf'], claimant('a'), 60_000);
    await db.query(`UPDATE "${db.schema}".leases SET expires_at = now() - interval '1 second'`);
    // The flush has locked the lease row and waits, mid-statement, for a history row another
    // transaction inserted (and will roll back).
    const blocker = await openTransaction(db);
    try {
      await blocker.query(`INSERT INTO "${db.schema}".history (workflow_id, seq, activation, type, at) VALUES ('w1', 1, 1, 'X', now())`);
      const flush = flushBatch(sql, tables, [], [makeWrite('w1', 0, 2)], fenced('a', '1'));
      await waitFor(() => isWaitingForLock(db, 'wal_commits'), 'the flush to wait for the row');
      const claim = claimLeases(sql, tables, ['wf'], claimant('b'), 60_000);
      await waitFor(() => isWaitingForLock(db, `INTO "${db.schema}".leases`), 'the takeover to wait for the flush');
      await blocker.rollback();
      await flush;
      expect(await claim).toEqual(new Map([['wf', '2']]));
    } finally {
      await blocker.rollback();
    }
    expect(await db.query(`SELECT seq FROM "${db.schema}".history ORDER BY seq`)).toEqual([{ seq: 1 }, { seq: 2 }]);
  });

  it('ends on close a lease that a claim still under way when close was called took', async () => {
    const { sql, tables, db } = store();
    // Another engine's lease that has run out: the keeper's next claim takes it.
    await claimLeases(sql, tables, ['wf'], claimant('gone'), 60_000);
    await db.query(`UPDATE "${db.schema}".leases SET expires_at = now()`);
    const keeper = new LeaseKeeper({ sql, tables, names: ['wf'], ttlMs: 60_000, isExclusive: false, logger: quietLogger, onChange() {} });
    const blocker = await openTransaction(db);
    try {
      await blocker.query(`LOCK TABLE "${db.schema}".leases IN EXCLUSIVE MODE`);
      const claiming = keeper.claim();
      await waitFor(() => isWaitingForLock(db, `INTO "${db.schema}".leases`), 'the claim to wait for the lock');
      const closing = keeper.close();
      await blocker.commit();
      await claiming;
      expect(await closing).toBe(true);
    } finally {
      await blocker.rollback();
    }
    const [lease] = await readLeases(sql, tables);
    expect({ owner: lease!.owner, isExpired: lease!.is_expired }).toEqual({ owner: keeper.owner, isExpired: true });
  });
});

/**
 * `sql`, except that the first statement containing `marker` fails as a reset connection does:
 * before it reaches the database, or (`runFirst`) after it ran and committed, its answer lost.
 */
function failingOnce(sql: Sql, marker: string, { runFirst }: { runFirst: boolean }): Sql {
  let isArmed = true;
  const reset = () => Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
  return {
    async query<Row>(text: string, params?: unknown[], name?: string) {
      if (!isArmed || !text.includes(marker)) return sql.query<Row>(text, params, name);
      isArmed = false;
      if (runFirst) await sql.query(text, params, name);
      throw reset();
    },
    exec: (script) => sql.exec(script),
    transaction: (work) => sql.transaction(work),
    listen: (channel, onPayload) => sql.listen(channel, onPayload),
    abort: () => sql.abort(),
    close: () => sql.close(),
  };
}

/** A transaction on its own connection, for holding locks while the code under test runs. */
async function openTransaction(db: TestSchema): Promise<{ query(text: string): Promise<unknown>; commit(): Promise<void>; rollback(): Promise<void> }> {
  const client = new pg.Client({ connectionString: db.database as string });
  await client.connect();
  await client.query('BEGIN');
  let isEnded = false;
  // Once only, so a `finally` can end it whatever the test got to.
  const end = async (how: string): Promise<void> => {
    if (isEnded) return;
    isEnded = true;
    await client.query(how).catch(() => undefined);
    await client.end().catch(() => undefined);
  };
  return { query: (text) => client.query(text), commit: () => end('COMMIT'), rollback: () => end('ROLLBACK') };
}
