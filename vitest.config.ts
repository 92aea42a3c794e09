import { fileURLToPath } from 'node:url';

import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Tests use the built package: activity threads load compiled JavaScript.
    alias: { duraflow: fileURLToPath(new URL('./dist/engine/index.js', import.meta.url)) },
  },
  test: {
    include: ['test/**/*.test.ts'],
    // A file whose tests all need a Postgres server holds none without DATABASE_URL, which vitest
    // reports as a failed file: such files are named *.server.test.ts and left out then.
    // TEST_SERVER_ONLY=1 (test/helpers/database.ts) runs what a server can change the outcome of:
    // it leaves out the unit tests, which touch no database, and the files whose tests all run on
    // the embedded database whatever DATABASE_URL says, named *.embedded.test.ts.
    exclude: [
      ...configDefaults.exclude,
      ...(process.env.DATABASE_URL ? [] : ['test/**/*.server.test.ts']),
      ...(process.env.TEST_SERVER_ONLY === '1' ? ['test/unit/**', 'test/**/*.embedded.test.ts'] : []),
    ],
    pool: 'forks',
    // One embedded database per test worker, shared by its files (a schema per test): PGlite
    // takes seconds to start.
    isolate: false,
    fileParallelism: true,
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    setupFiles: ['test/helpers/leak-check.ts'],
  },
});
