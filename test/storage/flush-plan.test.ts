import { describe, expect, it } from 'vitest';

import { flushBatch } from '../../storage/sql/flush-batch.js';
import type { Queryable } from '../../storage/sql.js';
import { makeStartRow, makeWrite } from '../helpers/builders.js';
import { backends } from '../helpers/database.js';
import { useStore } from '../helpers/storage.js';

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  Plans?: PlanNode[];
}

function nodesOf(node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(nodesOf)];
}

const WORKFLOWS = 5_000;

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
    let statement: { text: string; params: unknown[] } | undefined;
    const spy: Queryable = {
      query: (text, params, name) => {
        statement = { text, params: params ?? [] };
        return sql.query(text, params, name);
      },
      exec: (script, options) => sql.exec(script, options),
    };
    const ids = ['w1', 'w12', 'w123', 'w1234', 'w2000', 'w3999', 'w4999'];
    await flushBatch(spy, tables, [], ids.map((id) => makeWrite(id, 0, 1, { status: 'running', vars: '{"at":1}' })));
    // The planner takes the document for 100 rows, whatever it holds: with an equality join it
    // hashed them and scanned all 5,000 workflows.
    const [row] = await db.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (FORMAT JSON) ${statement!.text}`, statement!.params);
    const plan = row!['QUERY PLAN'];
    const nodes = nodesOf((typeof plan === 'string' ? JSON.parse(plan) : plan)[0].Plan as PlanNode);
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
