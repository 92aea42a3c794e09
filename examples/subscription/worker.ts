/**
 * The worker side of the example: an engine that runs subscriptions until Ctrl-C. Run it and the
 * client (`client.ts`) as separate processes against one Postgres: set DATABASE_URL.
 */
import { createEngine } from 'duraflow';

import { subscription } from './workflow.js';

const engine = await createEngine({
  // Set but empty counts as unset, as for the CLI.
  database: process.env.DATABASE_URL || undefined,
  workflows: { subscription },
  activities: new URL('./activities.js', import.meta.url),
});
console.log('worker running; Ctrl-C to stop');
const stop = (): void => {
  void engine.close().then(() => process.exit(0));
};
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
