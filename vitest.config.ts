import { fileURLToPath } from 'node:url';

import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    // Tests use the built package: activity threads load compiled JavaScript.
    alias: { duraflow: fileURLToPath(new URL('./dist/engine/index.js', import.meta.url)) },
  },
  test: {
    include: ['test/**/*.test.ts'],
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
