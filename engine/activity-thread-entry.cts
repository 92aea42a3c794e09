/**
 * The file Piscina loads in each activity thread. Piscina tries require() before import(), and
 * Node 20's require() of an ES module aborted a whole process once on a native assertion (a thread
 * starting while others were being replaced, under a full test run). This file is CommonJS, so
 * require() takes the ordinary path, and it loads the ES module thread code with import().
 */
import type * as ThreadModule from './activity-thread.js';

const thread: Promise<typeof ThreadModule> = import('./activity-thread.js');
// A load failure is reported by the first task, which awaits the same promise.
thread.catch(() => undefined);

// Piscina wraps what require() returns and looks a task's name up on the wrapper, where
// `default` is the exports themselves: so the exports are the default handler, with the named
// handlers as its properties.
export = Object.assign(
  async (task: Parameters<typeof ThreadModule.default>[0]) => (await thread).default(task),
  {
    describe: async () => (await thread).describe(),
    runBatch: async (batch: { text: string }) => (await thread).runBatch(batch.text),
  },
);
