/**
 * A migration statement that is slow (a table rewrite or an index build on a large table) runs
 * to its end: the driver's read timeout, meant for statements that answer in moments, does not
 * cut it off; every other statement keeps it.
 */
import { describe, expect, it } from 'vitest';

import { migrate } from '../../storage/migrate.js';
import { PgDriver } from '../../storage/pg-driver.js';
import { tablesFor } from '../../storage/sql.js';
import { serverBackends, type TestSchema, undoLastMigration, useSchema } from '../helpers/database.js';

const READ_TIMEOUT_MS = 500;

/**
 * Makes every ALTER TABLE on the schema's tables take `seconds` more: an event trigger (dropped
 * with the schema, as its function lives there) sleeps in the statement itself, as a table
 * rewrite would keep the server busy. ALTER TABLE elsewhere in the database passes at once.
 */
async function slowAlters(db: TestSchema, seconds: number): Promise<void> {
  await db.query(
    `CREATE FUNCTION "${db.schema}".slow_alter() RETURNS event_trigger LANGUAGE plpgsql AS $$
     BEGIN
       IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() WHERE schema_name = '${db.schema}') THEN
         PERFORM pg_sleep(${seconds});
       END IF;
     END $$`,
  );
  await db.query(
    `CREATE EVENT TRIGGER "slow_alter_${db.schema}" ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
     EXECUTE FUNCTION "${db.schema}".slow_alter()`,
  );
}

describe.each(serverBackends)('a slow migration on $name', (backend) => {
  const db = useSchema(backend);

  it('runs past the read timeout, which other statements keep', async () => {
    const tables = tablesFor(db().schema);
    const sql = new PgDriver({ connectionString: db().database as string, maxConnections: 1, onError() {}, readTimeoutMs: READ_TIMEOUT_MS });
    try {
      const { newest } = await migrate(sql, tables, 10_000);
      // The last migration, an ALTER TABLE of leases, is pending again.
      await undoLastMigration(db());
      await slowAlters(db(), (READ_TIMEOUT_MS * 3) / 1000);
      expect(await migrate(sql, tables, 10_000)).toEqual({ applied: newest, newest });
      const columns = await db().query(
        `SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'leases' AND column_name = 'process'`,
        [db().schema],
      );
      expect(columns).toEqual([{ column_name: 'process' }]);
      await expect(sql.query(`SELECT pg_sleep(${(READ_TIMEOUT_MS * 3) / 1000})`)).rejects.toThrow('Query read timeout');
    } finally {
      await db().query(`DROP EVENT TRIGGER IF EXISTS "slow_alter_${db().schema}"`);
      await sql.close();
    }
  });
});
