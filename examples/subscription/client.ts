/**
 * The client side of the example, with the original's three modes:
 *   node client.js schedule <workflowId> [totalAmount] [cycles] [cycleDurationMs]
 *   node client.js debug <workflowId>     prints the workflow's variables
 *   node client.js await <workflowId>     waits for and prints its result
 */
import { createClient } from 'duraflow';

const [mode, workflowId, total = '1000', cycles = '5', cycleMs = '2000'] = process.argv.slice(2);
if (!mode || !workflowId || !['schedule', 'debug', 'await'].includes(mode)) {
  console.error('usage: client.js schedule|debug|await <workflowId> [totalAmount] [cycles] [cycleDurationMs]');
  process.exit(2);
}
const numbers: Record<string, number> = {};
for (const [name, text] of Object.entries({ totalAmount: total, cycles, cycleDurationMs: cycleMs })) {
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value < 0) {
    console.error(`${name} must be a number of at least 0, got ${JSON.stringify(text)}`);
    process.exit(2);
  }
  // The workflow splits the total into one payment per cycle: a fraction of a cycle would pay NaN.
  if (name === 'cycles' && !Number.isInteger(value)) {
    console.error(`cycles must be a whole number, got ${JSON.stringify(text)}`);
    process.exit(2);
  }
  numbers[name] = value;
}
// Set but empty counts as unset, as for the CLI.
const client = await createClient({ database: process.env.DATABASE_URL || undefined });
try {
  if (mode === 'schedule') {
    await client.startWorkflow(
      'subscription',
      numbers,
      { workflowId, version: '1' },
    );
    console.log(`scheduled ${workflowId}`);
  } else if (mode === 'debug') {
    console.log(JSON.stringify((await client.inspect(workflowId)).vars, null, 2));
  } else {
    console.log(JSON.stringify(await client.result(workflowId), null, 2));
  }
} finally {
  await client.close();
}
