import { describe, expect, it } from 'vitest';

import { flushBatch } from '../../storage/sql/flush-batch.js';
import { claimLeases } from '../../storage/sql/leases.js';
import type { Queryable } from '../../storage/sql.js';
import { makeStartRow, makeWrite } from '../helpers/builders.js';
import { backends } from '../helpers/database.js';
import { useStore } from '../helpers/storage.js';

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Function Name'?: string;
  Plans?: PlanNode[];
}

function nodesOf(node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(nodesOf)];
}

const WORKFLOWS = 5_000;

/** `sql`, keeping the last statement sent through it. */
function recording(sql: Queryable): { db: Queryable; last: () => { text: string; params: unknown[] } } {
  let statement: { text: string; params: unknown[] } | undefined;
  const db: Queryable = {
    query: (text, params, name) => {
      statement = { text, params: params ?? [] };
      return sql.query(text, params, name);
    },
    exec: (script, options) => sql.exec(script, options),
  };
  return { db, last: () => statement! };
}

/** The plan nodes of `statement` as Postgres would run it now. */
async function planOf(db: { query<Row>(text: string, params?: unknown[]): Promise<Row[]> }, statement: { text: string; params: unknown[] }): Promise<PlanNode[]> {
  const [row] = await db.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${statement.text}`, statement.params);
  const plan = row!['QUERY PLAN'];
  return nodesOf((typeof plan === 'string' ? JSON.parse(plan) : plan)[0].Plan as PlanNode);
}

describe.each(backends)('a flush that updates workflow rows, on $name', (backend) => {
  const store = useStore(backend);
  const startWorkflows = async (count: number): Promise<void> => {
    const { sql, tables } = store();
    for (let i = 0; i < count; i += 500) {
      await flushBatch(sql, tables, Array.from({ length: Math.min(500, count - i) }, (_, k) => makeStartRow(`w${i + k}`)), []);
    }
  };

  it('finds each row through the primary key, not by scanning the table, however few rows it updates', async () => {
    const { db, sql, tables } = store();
    await startWorkflows(WORKFLOWS);
    await db.query(`ANALYZE "${db.schema}".workflows`);
    const spy = recording(sql);
    const ids = ['w1', 'w12', 'w123', 'w1234', 'w2000', 'w3999', 'w4999'];
    await flushBatch(spy.db, tables, [], ids.map((id) => makeWrite(id, 0, 1, { status: 'running', vars: '{"at":1}' })));
    // The planner takes the document for 100 rows, whatever it holds: with an equality join it
    // hashed them and scanned all 5,000 workflows.
    const nodes = await planOf(db, spy.last());
    const onWorkflows = nodes.filter((n) => n['Relation Name'] === 'workflows');
    expect(onWorkflows.map((n) => n['Node Type'])).not.toContain('Seq Scan');
    expect(onWorkflows.some((n) => n['Index Name'] === 'workflows_pkey')).toBe(true);
  });

  it('updates exactly the rows it names, not those whose id starts with theirs', async () => {
    const { db, sql, tables } = store();
    await startWorkflows(1001);
    await flushBatch(sql, tables, [], [makeWrite('w1', 0, 1, { status: 'running', vars: '{"v":1}' })]);
    const rows = await db.query<{ id: string; vars: string }>(
      `SELECT id, vars FROM "${db.schema}".workflows WHERE id IN ('w1', 'w10', 'w100', 'w1000') ORDER BY id`,
    );
    expect(rows).toEqual([
      { id: 'w1', vars: '{"v":1}' },
      { id: 'w10', vars: '{}' },
      { id: 'w100', vars: '{}' },
      { id: 'w1000', vars: '{}' },
    ]);
  });
});

describe.each(backends)('the lease check of a flush, on $name', (backend) => {
  const store = useStore(backend);

  it('looks the one name of its workflows up by key, and unnests, joins and sorts only for several', async () => {
    const { db, sql, tables } = store();
    await flushBatch(sql, tables, [makeStartRow('w1'), { ...makeStartRow('w2'), name: 'other' }], []);
    const epochs = await claimLeases(sql, tables, ['wf', 'other'], { owner: 'a', processIdentity: undefined, isExclusive: false, endedHolders: [] }, 60_000);
    const spy = recording(sql);
    const fence = (names: string[]) => ({ token: `t-${names.join()}`, fence: { owner: 'a', names, epochs: names.map((n) => epochs.get(n)!) } });
    // The history document is a function scan too, named jsonb_array_elements; the check's unnest
    // of two arrays at once is one unnamed.
    const kinds = async (): Promise<string[]> =>
      (await planOf(db, spy.last())).map((n) => (n['Function Name'] ? `${n['Node Type']} ${n['Function Name']}` : n['Node Type']));
    await flushBatch(spy.db, tables, [], [makeWrite('w1', 0, 1)], fence(['wf']));
    const one = await kinds();
    await flushBatch(spy.db, tables, [], [makeWrite('w1', 1, 1), { ...makeWrite('w2', 0, 1), workflowName: 'other' }], fence(['wf', 'other']));
    const several = await kinds();
    expect(one).not.toContain('Function Scan');
    expect(one).not.toContain('Sort');
    expect(several).toContain('Function Scan');
    expect(several).toContain('Sort');
    expect(await db.query(`SELECT workflow_id, seq FROM "${db.schema}".history ORDER BY 1, 2`)).toEqual([
      { workflow_id: 'w1', seq: 1 },
      { workflow_id: 'w1', seq: 2 },
      { workflow_id: 'w2', seq: 1 },
    ]);
  });
});
