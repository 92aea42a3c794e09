/*
 * Who holds a lock the migrations waited for, read from pg_locks after the wait gave up (the
 * waiting statement is gone by then, so pg_blocking_pids cannot be asked): the sessions holding
 * the schema's advisory migration lock, or holding any lock on one of the schema's tables.
 */
import type { Queryable } from '../sql.js';

/** A session holding a lock, as pg_locks and pg_stat_activity show it. */
export interface LockHolder {
  pid: number;
  /** Its `application_name` (`pg_dump`, `psql`), if set and visible to this role. */
  applicationName: string | null;
  /** `active`, `idle in transaction` and so on, if visible to this role. */
  state: string | null;
  /** `AccessShareLock`, `ExclusiveLock` … */
  mode: string;
  /** The table locked, as `"schema".name`; null for the advisory lock. */
  relation: string | null;
}

interface HolderRow {
  pid: number;
  application_name: string | null;
  state: string | null;
  mode: string;
  relation: string | null;
}

function toHolder(row: HolderRow): LockHolder {
  return { pid: row.pid, applicationName: row.application_name || null, state: row.state, mode: row.mode, relation: row.relation };
}

/**
 * The sessions holding the advisory lock keyed `hashtext(key)`. pg_locks shows a bigint key as
 * its high and low halves (classid, objid) with objsubid 1.
 */
export async function advisoryLockHolders(db: Queryable, key: string): Promise<LockHolder[]> {
  const { rows } = await db.query<HolderRow>(
    `SELECT l.pid, a.application_name, a.state, l.mode, NULL AS relation
     FROM pg_catalog.pg_locks l
     LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid()
       AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
       AND l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtext($1)::bigint
     ORDER BY l.pid`,
    [key],
  );
  return rows.map(toHolder);
}

/** The sessions holding a lock on a table of `schema`. */
export async function tableLockHolders(db: Queryable, schema: string): Promise<LockHolder[]> {
  const { rows } = await db.query<HolderRow>(
    `SELECT l.pid, a.application_name, a.state, l.mode, format('"%s".%s', n.nspname, c.relname) AS relation
     FROM pg_catalog.pg_locks l
     JOIN pg_catalog.pg_class c ON c.oid = l.relation
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
       AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
       AND n.nspname = $1 AND c.relkind IN ('r', 'p')
     ORDER BY l.pid, relation`,
    [schema],
  );
  return rows.map(toHolder);
}
