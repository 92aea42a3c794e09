import { afterEach, expect } from 'vitest';

import { trackedEngines } from './engines.js';

// A test that leaves an engine or client open would leak threads and connections into the next.
afterEach(async () => {
  const leaked = [...trackedEngines];
  trackedEngines.clear();
  await Promise.all(leaked.map((e) => e.close().catch(() => undefined)));
  expect(leaked.length, 'engines or clients left open by the test').toBe(0);
});
