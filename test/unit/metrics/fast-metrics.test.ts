import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';

import { FastCounter, FastHistogram } from '../../../metrics/fast-metrics.js';

describe('fast metrics', () => {
  it('keeps counting into the children the hot path holds after a registry reset', async () => {
    const registry = new Registry();
    const counter = new FastCounter(registry, 'c_total', 'c', ['outcome']);
    const histogram = new FastHistogram(registry, 'h_seconds', 'h', [], [0.1, 1]);
    const held = counter.child('ok');
    const heldHistogram = histogram.child();
    held.value += 2;
    histogram.observe(heldHistogram, 0.5);
    registry.resetMetrics();
    expect(await registry.getSingleMetricAsString('c_total')).toContain('c_total{outcome="ok"} 0');
    expect(await registry.getSingleMetricAsString('h_seconds')).toContain('h_seconds_count 0');
    held.value += 1;
    histogram.observe(heldHistogram, 0.05);
    expect(await registry.getSingleMetricAsString('c_total')).toContain('c_total{outcome="ok"} 1');
    const text = await registry.getSingleMetricAsString('h_seconds');
    expect(text).toContain('h_seconds_bucket{le="0.1"} 1');
    expect(text).toContain('h_seconds_count 1');
  });
});
