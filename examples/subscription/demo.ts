/**
 * One-shot demo on the embedded database: starts (or resumes) a subscription and prints its
 * variables as they change, then its result. Stop it midway and run it again: the workflow
 * resumes from `./.duraflow` where it was.
 */
import { createEngine, WorkflowAlreadyExistsError } from 'duraflow';

import { subscription } from './workflow.js';

const workflowId = 'subscription-demo';
const engine = await createEngine({
  dataDir: process.env.DURAFLOW_DATA_DIR ?? './.duraflow',
  workflows: { subscription },
  activities: new URL('./activities.js', import.meta.url),
  activityThreads: 1,
});

process.once('SIGINT', () => {
  console.log('\nstopped; run the demo again to resume the same workflow');
  void engine.close().then(() => process.exit(130));
});

try {
  await engine.startWorkflow(
    subscription,
    { totalAmount: 1000, cycles: 5, cycleDurationMs: 1000 },
    { workflowId, version: '1' },
  );
  console.log(`started workflow ${workflowId}`);
} catch (error) {
  if (!(error instanceof WorkflowAlreadyExistsError)) throw error;
  console.log(`resuming workflow ${workflowId} from the embedded database`);
}

// Prints each variable when it changes, like a debugger's watch list.
const shown = new Map<string, string>();
const showVars = async (): Promise<void> => {
  const { vars } = await engine.inspect(workflowId);
  for (const [name, value] of Object.entries(vars)) {
    const text = JSON.stringify(value);
    if (shown.get(name) === text) continue;
    shown.set(name, text);
    console.log(`  ${name} = ${text}`);
  }
};
const watcher = setInterval(() => void showVars().catch(() => undefined), 200);
try {
  const result = await engine.result(workflowId);
  await showVars();
  console.log('result', result);
  console.log('(delete ./.duraflow to run a new subscription)');
} finally {
  clearInterval(watcher);
  await engine.close();
}
