import { afterEach, beforeEach } from 'vitest';

import { migrate } from '../../storage/migrate.js';
import { PgDriver } from '../../storage/pg-driver.js';
import { PgliteDriver } from '../../storage/pglite-driver.js';
import { type Sql, type Tables, tablesFor } from '../../storage/sql.js';
import type { Backend, TestSchema } from './database.js';

/** A migrated schema on `backend` and the storage layer's driver for it. */
export interface TestStore {
  db: TestSchema;
  sql: Sql;
  tables: Tables;
}

/**
 * Gives every test of the enclosing `describe` a fresh migrated store (dropped afterwards); read
 * it through the returned getter inside the tests.
 */
export function useStore(backend: Backend): () => TestStore {
  let store: TestStore | undefined;
  beforeEach(async () => {
    const db = await backend.schema();
    const sql =
      typeof db.database === 'string'
        ? new PgDriver({ connectionString: db.database, maxConnections: 4, onError() {} })
        : PgliteDriver.wrap(db.database);
    const tables = tablesFor(db.schema);
    await migrate(sql, tables, 10_000);
    store = { db, sql, tables };
  });
  afterEach(async () => {
    await store?.sql.close();
    await store?.db.drop();
    store = undefined;
  });
  return () => {
    if (!store) throw new Error('useStore: read the store inside a test');
    return store;
  };
}
