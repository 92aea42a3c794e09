import { describe, expect, it } from 'vitest';

import { resolveConnection } from '../../engine/options.js';
import { EngineClosedError } from '../../engine/errors.js';
import { WorkflowStore } from '../../engine/workflow-store.js';
import { backends, serverBackends } from '../helpers/database.js';
import { useStore } from '../helpers/storage.js';

describe.each(backends)('WorkflowStore result waits on $name', (backend) => {
  const store = useStore(backend);

  it('re-reads only workflows running elsewhere, and a burst of notices costs at most two reads', async () => {
    const { db } = store();
    const workflows = await WorkflowStore.open(resolveConnection({ database: db.database, schema: db.schema }));
    try {
      for (const id of ['remote', 'local']) await workflows.insertStart(workflows.prepareStart('wf', null, { workflowId: id }));
      const reads: string[][] = [];
      let firstReadSaw!: (status: string) => void;
      const firstRead = new Promise<string>((resolve) => (firstReadSaw = resolve));
      const query = workflows.sql.query.bind(workflows.sql);
      workflows.sql.query = (async (text: string, params?: unknown[], name?: string) => {
        if (text.includes("status IN ('completed', 'failed')")) reads.push(params![0] as string[]);
        const result = await query(text, params, name);
        if (text.includes('WHERE id = $1') && params![0] === 'remote') firstReadSaw((result.rows[0] as { status: string }).status);
        return result;
      }) as typeof query;
      const remote = workflows.result<number>('remote');
      const local = workflows.result<number>('local', {}, true);
      expect(workflows.waiters.idsElsewhere()).toEqual(['remote']);
      // result() registers its wait, then reads the row: the workflow ends only once that read
      // found it still waiting, so only a re-read can answer the wait.
      expect(await firstRead).toBe('pending');
      await db.query(`UPDATE "${db.schema}".workflows SET status = 'completed', result = '7' WHERE id = 'remote'`);
      await Promise.all(Array.from({ length: 20 }, () => workflows.checkWaiters()));
      expect(await remote).toBe(7);
      expect(reads.length).toBeGreaterThanOrEqual(1);
      expect(reads.length).toBeLessThanOrEqual(2);
      expect(reads.flat().every((id) => id === 'remote')).toBe(true);
      workflows.waiters.settle('local', { status: 'completed', result: '8', error: null });
      expect(await local).toBe(8);
    } finally {
      await workflows.close();
    }
  });
});

describe.each(serverBackends)('WorkflowStore after its driver gave up on the database on $name', (backend) => {
  const store = useStore(backend);

  it('fails calls with EngineClosedError, not the driver error, before the close that aborted it ends', async () => {
    const { db } = store();
    const workflows = await WorkflowStore.open(resolveConnection({ database: db.database, schema: db.schema }));
    try {
      workflows.sql.abort();
      await expect(workflows.leases()).rejects.toBeInstanceOf(EngineClosedError);
      await expect(workflows.inspect('x')).rejects.toBeInstanceOf(EngineClosedError);
    } finally {
      await workflows.close();
    }
  });
});
