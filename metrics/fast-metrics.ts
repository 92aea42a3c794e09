/**
 * Counters and histograms that cost a few arithmetic operations per update, rendered through
 * prom-client's registry (which only needs `name`, `help`, `type`, `get()` and `reset()`).
 * prom-client's own metrics hash their label values on every update; these resolve a child once
 * per label combination and keep plain numbers, so the hot path allocates nothing.
 */
import type { Metric, Registry } from 'prom-client';

type Labels = Record<string, string>;

interface MetricValue {
  labels: Labels;
  value: number;
  metricName?: string;
}

function labelsOf(names: readonly string[], values: readonly string[]): Labels {
  const labels: Labels = {};
  names.forEach((name, i) => {
    labels[name] = values[i] ?? '';
  });
  return labels;
}

abstract class FastMetric<Child> {
  readonly name: string;
  readonly help: string;
  readonly aggregator = 'sum';
  readonly labelNames: readonly string[];
  protected readonly children = new Map<string, Child>();

  constructor(registry: Registry, name: string, help: string, labelNames: readonly string[]) {
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
    registry.registerMetric(this as unknown as Metric);
  }

  /** The child for these label values, created on first use; keep it to skip the lookup. */
  child(...labelValues: string[]): Child {
    const key = labelValues.join('\u0000');
    let child = this.children.get(key);
    if (!child) {
      child = this.create(labelsOf(this.labelNames, labelValues));
      this.children.set(key, child);
    }
    return child;
  }

  /** Zeroes every child; the hot path keeps the children it holds, so they must stay registered. */
  reset(): void {
    for (const child of this.children.values()) this.zero(child);
  }

  protected abstract create(labels: Labels): Child;
  protected abstract zero(child: Child): void;
}

/** A counter child. */
export interface CounterChild {
  readonly labels: Labels;
  value: number;
}

export class FastCounter extends FastMetric<CounterChild> {
  readonly type = 'counter';

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: MetricValue[] }> {
    const values = [...this.children.values()].map((c) => ({ labels: c.labels, value: c.value }));
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  protected create(labels: Labels): CounterChild {
    return { labels, value: 0 };
  }

  protected zero(child: CounterChild): void {
    child.value = 0;
  }
}

/** A histogram child: per-bucket (not cumulative) counts, sum and count. */
export interface HistogramChild {
  readonly labels: Labels;
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

export class FastHistogram extends FastMetric<HistogramChild> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];

  constructor(registry: Registry, name: string, help: string, labelNames: readonly string[], buckets: readonly number[]) {
    super(registry, name, help, labelNames);
    this.buckets = buckets;
  }

  observe(child: HistogramChild, value: number): void {
    const buckets = this.buckets;
    let i = 0;
    while (i < buckets.length && value > buckets[i]!) i++;
    child.counts[i]! += 1;
    child.sum += value;
    child.count += 1;
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: MetricValue[] }> {
    const values: MetricValue[] = [];
    for (const child of this.children.values()) {
      let cumulative = 0;
      this.buckets.forEach((bound, i) => {
        cumulative += child.counts[i]!;
        values.push({ metricName: `${this.name}_bucket`, labels: { ...child.labels, le: String(bound) }, value: cumulative });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { ...child.labels, le: '+Inf' }, value: child.count });
      values.push({ metricName: `${this.name}_sum`, labels: child.labels, value: child.sum });
      values.push({ metricName: `${this.name}_count`, labels: child.labels, value: child.count });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  protected create(labels: Labels): HistogramChild {
    return { labels, counts: new Float64Array(this.buckets.length + 1), sum: 0, count: 0 };
  }

  protected zero(child: HistogramChild): void {
    child.counts.fill(0);
    child.sum = 0;
    child.count = 0;
  }
}
