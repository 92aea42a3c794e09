import { Counter, Histogram, type Registry } from 'prom-client';

import { Label, MetricName } from './metric-names.js';

/** 100 µs to 60 s, roughly ×2.5 per bucket: resolves both a fast flush and a slow activity. */
export const LATENCY_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

/** Events per flush. */
export const BATCH_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

/**
 * The counters and histograms the engine updates as it works. Children of labelled metrics are
 * cached per label value, so the hot path does not rebuild label keys.
 */
export class EngineMetrics {
  readonly walFlushDuration: Histogram;
  readonly walBatchEvents: Histogram;
  readonly walFlushes: Counter;
  readonly walFlushErrors: Counter;
  readonly eventsWritten: Counter;
  readonly timerLateness: Histogram;
  readonly rehydrationDuration: Histogram;
  readonly rehydrations: Counter;
  readonly evictions: Counter;
  readonly nonDeterminismErrors: Counter;
  readonly #stepDuration: Histogram<string>;
  readonly #workflowDuration: Histogram<string>;
  readonly #started: Counter<string>;
  readonly #completed: Counter<string>;
  readonly #failed: Counter<string>;
  readonly #scheduleToStart: Histogram<string>;
  readonly #runDuration: Histogram<string>;
  readonly #attempts: Counter<string>;
  readonly #failures: Counter<string>;
  readonly #retries: Counter<string>;
  readonly #children = new Map<string, { observe?(v: number): void; inc?(v?: number): void }>();

  constructor(registry: Registry) {
    const registers = [registry];
    const latency = (name: string, help: string, labelNames: string[] = []): Histogram<string> =>
      new Histogram({ name, help, labelNames, buckets: LATENCY_BUCKETS, registers });
    const counter = (name: string, help: string, labelNames: string[] = []): Counter<string> =>
      new Counter({ name, help, labelNames, registers });

    this.walFlushDuration = latency(MetricName.WalFlushDuration, 'Time to commit one WAL batch (one transaction).');
    this.walBatchEvents = new Histogram({
      name: MetricName.WalBatchEvents,
      help: 'History events committed per WAL flush (group-commit batch size).',
      buckets: BATCH_BUCKETS,
      registers,
    });
    this.walFlushes = counter(MetricName.WalFlushes, 'WAL batches committed.');
    this.walFlushErrors = counter(MetricName.WalFlushErrors, 'WAL flushes that failed (retried or discarded).');
    this.eventsWritten = counter(MetricName.EventsWritten, 'History events committed.');
    this.timerLateness = latency(MetricName.TimerLateness, 'How late durable timers fire: fired minus due time.');
    this.rehydrationDuration = latency(
      MetricName.RehydrationDuration,
      'Time to rebuild an actor: load its history and replay it.',
    );
    this.rehydrations = counter(MetricName.ActorRehydrations, 'Actors rebuilt from history.');
    this.evictions = counter(MetricName.ActorEvictions, 'Idle actors evicted from memory.');
    this.nonDeterminismErrors = counter(
      MetricName.NonDeterminismErrors,
      'Workflows parked because their code no longer matches their history.',
    );
    this.#stepDuration = latency(
      MetricName.WorkflowStepDuration,
      'One workflow step: first message in the mailbox to its commands committed.',
      [Label.Workflow],
    );
    this.#workflowDuration = latency(
      MetricName.WorkflowDuration,
      'Workflow end to end: start to completion or failure.',
      [Label.Workflow, Label.Outcome],
    );
    this.#started = counter(MetricName.WorkflowsStarted, 'Workflows whose first step committed.', [Label.Workflow]);
    this.#completed = counter(MetricName.WorkflowsCompleted, 'Workflows that returned.', [Label.Workflow]);
    this.#failed = counter(MetricName.WorkflowsFailed, 'Workflows whose code threw.', [Label.Workflow]);
    this.#scheduleToStart = latency(
      MetricName.ActivityScheduleToStart,
      'Activity attempt due (scheduled, or retry time) to running in a thread.',
      [Label.Activity],
    );
    this.#runDuration = latency(MetricName.ActivityRunDuration, 'Activity attempt run time.', [
      Label.Activity,
      Label.Outcome,
    ]);
    this.#attempts = counter(MetricName.ActivityAttempts, 'Activity attempts finished.', [Label.Activity]);
    this.#failures = counter(MetricName.ActivityFailures, 'Activities that failed for good.', [Label.Activity]);
    this.#retries = counter(MetricName.ActivityRetries, 'Failed activity attempts that will be retried.', [
      Label.Activity,
    ]);
  }

  stepCommitted(workflow: string, seconds: number): void {
    this.#child(this.#stepDuration, 'step', workflow).observe!(seconds);
  }

  workflowStarted(workflow: string): void {
    this.#child(this.#started, 'started', workflow).inc!();
  }

  workflowFinished(workflow: string, outcome: 'completed' | 'failed', seconds: number): void {
    this.#child(outcome === 'completed' ? this.#completed : this.#failed, outcome, workflow).inc!();
    this.#child(this.#workflowDuration, `duration:${outcome}`, workflow, outcome).observe!(seconds);
  }

  activityAttempted(
    activity: string,
    outcome: 'completed' | 'retried' | 'failed',
    scheduleToStartSeconds: number,
    runSeconds: number,
  ): void {
    this.#child(this.#attempts, 'attempts', activity).inc!();
    this.#child(this.#scheduleToStart, 'sts', activity).observe!(scheduleToStartSeconds);
    this.#child(this.#runDuration, `run:${outcome}`, activity, outcome).observe!(runSeconds);
    if (outcome === 'retried') this.#child(this.#retries, 'retries', activity).inc!();
    if (outcome === 'failed') this.#child(this.#failures, 'failures', activity).inc!();
  }

  #child(
    metric: Histogram<string> | Counter<string>,
    kind: string,
    ...labels: string[]
  ): { observe?(v: number): void; inc?(v?: number): void } {
    const key = `${kind}\0${labels.join('\0')}`;
    let child = this.#children.get(key);
    if (!child) {
      child = metric.labels(...labels) as { observe?(v: number): void; inc?(v?: number): void };
      this.#children.set(key, child);
    }
    return child;
  }
}
