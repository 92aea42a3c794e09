import { createEngine } from 'duraflow';

import { sum2rn } from './workflow.js';

const engine = await createEngine({
  // Set but empty counts as unset, as for the CLI.
  database: process.env.DATABASE_URL || undefined,
  dataDir: process.env.DURAFLOW_DATA_DIR ?? './.duraflow',
  workflows: { sum2rn },
  activities: new URL('./activities.js', import.meta.url),
  activityThreads: 2,
});
try {
  const handle = await engine.startWorkflow(sum2rn, { seed: Number(process.argv[2] ?? Date.now() % 100_000) });
  console.log('started', handle.workflowId);
  console.log('result', await handle.result());
} finally {
  await engine.close();
}
