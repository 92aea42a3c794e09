import type { Queryable, Tables } from '../sql.js';

/** An external event waiting in the inbox. */
export interface InboxRow {
  id: number;
  workflowId: string;
  name: string;
  payload: string | undefined;
  /** When it was stored (epoch ms, the database's clock). */
  createdAt: number;
}

/** An event as the engine's reads for delivery select it: with its workflow's name, whose lease delivery needs. */
export interface DeliverableEvent extends InboxRow {
  workflowName: string;
}

/** What `insertEvent` did. */
export type InsertEventResult =
  /**
   * `unconsumedBefore`: the workflow's events stored before this one and not consumed yet, oldest
   * first; null when there are more than `MAX_LISTED_BEFORE`.
   */
  | { outcome: 'stored'; id: number; workflowName: string; unconsumedBefore: number[] | null }
  /**
   * An event with this id was stored before (consumed or not, its workflow finished or not);
   * `isSame` says whether with this name and payload (undefined if that row is gone already).
   */
  | { outcome: 'duplicate'; isSame: boolean | undefined }
  | { outcome: 'refused'; status: 'missing' | 'completed' | 'failed' };

/** Most earlier unconsumed events `insertEvent` lists (a workflow rarely has more than a few). */
const MAX_LISTED_BEFORE = 100;

/**
 * Stores an event for a workflow that exists and has not finished, once per `eventId`. A retried
 * send is a duplicate even if its first try was delivered and ended the workflow meanwhile.
 */
export async function insertEvent(
  db: Queryable,
  t: Tables,
  workflowId: string,
  name: string,
  payload: string | undefined,
  eventId: string,
): Promise<InsertEventResult> {
  // Every subquery sees the snapshot from before the insert: `isSame` reads an earlier send's row.
  // The workflow's row is read FOR SHARE: a send racing the step that ends the workflow waits for
  // its commit and then sees the end, so it is refused rather than stored where nothing will ever
  // take it.
  // The row this id already has, compared with this send ($1..$4 as bound below).
  const sameAsStored = `SELECT name = $2 AND payload IS NOT DISTINCT FROM $3 AS "isSame" FROM ${t.inbox} WHERE workflow_id = $1 AND event_id = $4`;
  // The statement's snapshot does not hold its own insert: `before` lists only earlier events.
  const { rows } = await db.query<{
    id: string | null;
    isSame: boolean | null;
    name: string | null;
    status: string | null;
    before: string[] | null;
  }>(
    `WITH w AS (
       SELECT id, name, status FROM ${t.workflows} WHERE id = $1 FOR SHARE
     ), ins AS (
       INSERT INTO ${t.inbox} (workflow_id, name, payload, event_id)
       SELECT id, $2, $3, $4 FROM w WHERE status IN ('pending', 'running')
       ON CONFLICT (workflow_id, event_id) DO NOTHING
       RETURNING id
     )
     SELECT (SELECT id FROM ins) AS id,
            (${sameAsStored}) AS "isSame",
            (SELECT name FROM w) AS name,
            (SELECT status FROM w) AS status,
            (SELECT CASE WHEN count(*) > ${MAX_LISTED_BEFORE} THEN NULL ELSE coalesce(array_agg(id ORDER BY id), '{}') END
             FROM (SELECT id FROM ${t.inbox} WHERE workflow_id = $1 AND consumed_at IS NULL ORDER BY id LIMIT ${MAX_LISTED_BEFORE + 1}) e) AS before`,
    [workflowId, name, payload ?? null, eventId],
  );
  const row = rows[0]!;
  if (row.name === null) return { outcome: 'refused', status: 'missing' };
  if (row.id !== null) {
    return { outcome: 'stored', id: Number(row.id), workflowName: row.name, unconsumedBefore: row.before?.map(Number) ?? null };
  }
  // The payloads compare as the codec wrote them: a retry of a send encodes the same value the same way.
  if (row.isSame !== null) return { outcome: 'duplicate', isSame: row.isSame };
  // Nothing inserted for an open workflow means the id was taken, by a send this snapshot does not
  // see (a concurrent one that committed while this insert waited for it): a new statement does.
  if (row.status === 'pending' || row.status === 'running') {
    const again = await db.query<{ isSame: boolean }>(sameAsStored, [workflowId, name, payload ?? null, eventId]);
    return { outcome: 'duplicate', isSame: again.rows[0]?.isSame };
  }
  return { outcome: 'refused', status: row.status as 'completed' | 'failed' };
}

/**
 * The FROM and WHERE the event reads share: unconsumed events of workflows named in `$1`, of the
 * ids in `$2` only when that is not null.
 */
function unconsumedOfNamed(t: Tables): string {
  return `FROM ${t.inbox} i JOIN ${t.workflows} w ON w.id = i.workflow_id
     WHERE i.consumed_at IS NULL AND w.name = ANY($1::text[])
       AND ($2::text[] IS NULL OR i.workflow_id = ANY($2::text[]))`;
}

/**
 * Inbox rows of unfinished workflows whose name is in `workflowNames` (and, optionally, whose id is
 * in `workflowIds`), oldest first, after the row `afterId` (for reading on where a full read ended). Left out: events of a workflow whose start is still to come
 * (they wait for it), and of a parked workflow (running, with an error), which takes none (see
 * `firstEventsOfParked`): thousands of either would fill every read's window and starve the rest.
 */
export async function inboxFor(
  db: Queryable,
  t: Tables,
  workflowNames: readonly string[],
  workflowIds?: readonly string[],
  limit = 10_000,
  afterId = 0,
): Promise<DeliverableEvent[]> {
  const { rows } = await db.query<StoredDeliverableEvent>(
    `SELECT i.id, i.workflow_id, w.name AS workflow_name, i.name, i.payload, i.created_at ${unconsumedOfNamed(t)}
       AND ((w.status = 'running' AND w.error IS NULL)
            OR (w.status = 'pending' AND w.start_at <= to_timestamp($3 / 1000.0)))
       AND i.id > $5
     ORDER BY i.id LIMIT $4`,
    // This process's clock, which also decides when it fires delayed starts.
    [workflowNames, workflowIds ?? null, Date.now(), limit, afterId],
  );
  return rows.map(toDeliverableEvent);
}

/**
 * The oldest waiting event of each parked workflow (as `inboxFor` filters them), for `limit` of
 * them at most (each one brought back is a replay): enough to bring it into memory, where code
 * that matches its history again runs it on; it then takes the rest through the ordinary reads.
 */
export async function firstEventsOfParked(
  db: Queryable,
  t: Tables,
  workflowNames: readonly string[],
  workflowIds?: readonly string[],
  limit = 10_000,
): Promise<DeliverableEvent[]> {
  const { rows } = await db.query<StoredDeliverableEvent>(
    `SELECT DISTINCT ON (i.workflow_id) i.id, i.workflow_id, w.name AS workflow_name, i.name, i.payload, i.created_at ${unconsumedOfNamed(t)}
       AND w.status = 'running' AND w.error IS NOT NULL
     ORDER BY i.workflow_id, i.id LIMIT $3`,
    [workflowNames, workflowIds ?? null, limit],
  );
  return rows.map(toDeliverableEvent);
}

/** An inbox row as the reads above select it. */
interface StoredEvent {
  id: string;
  workflow_id: string;
  name: string;
  payload: string | null;
  created_at: Date;
}

interface StoredDeliverableEvent extends StoredEvent {
  workflow_name: string;
}

function toInboxRow(r: StoredEvent): InboxRow {
  return { id: Number(r.id), workflowId: r.workflow_id, name: r.name, payload: r.payload ?? undefined, createdAt: r.created_at.getTime() };
}

function toDeliverableEvent(r: StoredDeliverableEvent): DeliverableEvent {
  return { ...toInboxRow(r), workflowName: r.workflow_name };
}

/** Events of one workflow not yet consumed (for inspect). */
export async function inboxOf(db: Queryable, t: Tables, workflowId: string): Promise<InboxRow[]> {
  const { rows } = await db.query<Omit<StoredEvent, 'workflow_id'>>(
    `SELECT id, name, payload, created_at FROM ${t.inbox} WHERE workflow_id = $1 AND consumed_at IS NULL ORDER BY id`,
    [workflowId],
  );
  return rows.map((r) => toInboxRow({ ...r, workflow_id: workflowId }));
}
