import type { Registry } from 'prom-client';

import { type CounterChild, FastCounter, FastHistogram, type HistogramChild } from './fast-metrics.js';
import { Label, MetricName } from './metric-names.js';

/** 100 µs to 60 s, roughly ×2.5 per bucket: resolves both a fast flush and a slow activity. */
export const LATENCY_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

/** Events per flush. */
export const BATCH_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

interface WorkflowChildren {
  step: HistogramChild;
  started: CounterChild;
  completed: CounterChild;
  failed: CounterChild;
  completedDuration: HistogramChild;
  failedDuration: HistogramChild;
}

interface ActivityChildren {
  attempts: CounterChild;
  failures: CounterChild;
  retries: CounterChild;
  scheduleToStart: HistogramChild;
  run: Record<'completed' | 'retried' | 'failed', HistogramChild>;
}

/**
 * The counters and histograms the engine updates as it works. Label children are resolved once
 * per workflow or activity name, so an update is a few additions.
 */
export class EngineMetrics {
  readonly #flushDuration: HistogramChild;
  readonly #batchEvents: HistogramChild;
  readonly #flushes: CounterChild;
  readonly #flushErrors: CounterChild;
  readonly #events: CounterChild;
  readonly #timerLateness: HistogramChild;
  readonly #rehydrationDuration: HistogramChild;
  readonly #rehydrations: CounterChild;
  readonly #evictions: CounterChild;
  readonly #nonDeterminism: CounterChild;
  readonly #counters: Record<string, FastCounter>;
  readonly #histograms: Record<string, FastHistogram>;
  readonly #byWorkflow = new Map<string, WorkflowChildren>();
  readonly #byActivity = new Map<string, ActivityChildren>();

  constructor(registry: Registry) {
    const latency = (name: string, help: string, labels: string[] = []): FastHistogram =>
      new FastHistogram(registry, name, help, labels, LATENCY_BUCKETS);
    const counter = (name: string, help: string, labels: string[] = []): FastCounter =>
      new FastCounter(registry, name, help, labels);
    const h = {
      flush: latency(MetricName.WalFlushDuration, 'Time to commit one WAL batch (one statement, one round trip).'),
      batch: new FastHistogram(
        registry,
        MetricName.WalBatchEvents,
        'History events committed per WAL flush (group-commit batch size).',
        [],
        BATCH_BUCKETS,
      ),
      lateness: latency(MetricName.TimerLateness, 'How late durable timers fire: fired minus due time.'),
      rehydration: latency(MetricName.RehydrationDuration, 'Time to rebuild an actor: load its history and replay it.'),
      step: latency(
        MetricName.WorkflowStepDuration,
        'One workflow step: first message in the mailbox to its commands committed.',
        [Label.Workflow],
      ),
      workflow: latency(MetricName.WorkflowDuration, 'Workflow end to end: start to completion or failure.', [
        Label.Workflow,
        Label.Outcome,
      ]),
      scheduleToStart: latency(
        MetricName.ActivityScheduleToStart,
        'Activity attempt due (scheduled, or retry time) to running in a thread.',
        [Label.Activity],
      ),
      run: latency(MetricName.ActivityRunDuration, 'Activity attempt run time.', [Label.Activity, Label.Outcome]),
    };
    const c = {
      flushes: counter(MetricName.WalFlushes, 'WAL batches committed.'),
      flushErrors: counter(MetricName.WalFlushErrors, 'WAL flushes that failed (retried or discarded).'),
      events: counter(MetricName.EventsWritten, 'History events committed.'),
      rehydrations: counter(MetricName.ActorRehydrations, 'Actors rebuilt from history.'),
      evictions: counter(MetricName.ActorEvictions, 'Idle actors evicted from memory.'),
      nonDeterminism: counter(
        MetricName.NonDeterminismErrors,
        'Workflows parked because their code no longer matches their history.',
      ),
      started: counter(MetricName.WorkflowsStarted, 'Workflows whose first step committed.', [Label.Workflow]),
      completed: counter(MetricName.WorkflowsCompleted, 'Workflows that returned.', [Label.Workflow]),
      failed: counter(MetricName.WorkflowsFailed, 'Workflows whose code threw.', [Label.Workflow]),
      attempts: counter(MetricName.ActivityAttempts, 'Activity attempts finished.', [Label.Activity]),
      failures: counter(MetricName.ActivityFailures, 'Activities that failed for good, once the failure is stored.', [Label.Activity]),
      retries: counter(MetricName.ActivityRetries, 'Failed activity attempts that will be retried.', [Label.Activity]),
    };
    this.#counters = c;
    this.#histograms = h;
    this.#flushDuration = h.flush.child();
    this.#batchEvents = h.batch.child();
    this.#timerLateness = h.lateness.child();
    this.#rehydrationDuration = h.rehydration.child();
    this.#flushes = c.flushes.child();
    this.#flushErrors = c.flushErrors.child();
    this.#events = c.events.child();
    this.#rehydrations = c.rehydrations.child();
    this.#evictions = c.evictions.child();
    this.#nonDeterminism = c.nonDeterminism.child();
  }

  flushed(events: number, seconds: number): void {
    this.#flushes.value++;
    this.#events.value += events;
    this.#histograms.batch!.observe(this.#batchEvents, events);
    this.#histograms.flush!.observe(this.#flushDuration, seconds);
  }

  flushFailed(): void {
    this.#flushErrors.value++;
  }

  timerFired(latenessSeconds: number): void {
    this.#histograms.lateness!.observe(this.#timerLateness, latenessSeconds);
  }

  rehydrated(seconds: number): void {
    this.#rehydrations.value++;
    this.#histograms.rehydration!.observe(this.#rehydrationDuration, seconds);
  }

  evicted(): void {
    this.#evictions.value++;
  }

  parked(): void {
    this.#nonDeterminism.value++;
  }

  stepCommitted(workflow: string, seconds: number): void {
    this.#histograms.step!.observe(this.#workflow(workflow).step, seconds);
  }

  workflowStarted(workflow: string): void {
    this.#workflow(workflow).started.value++;
  }

  workflowFinished(workflow: string, outcome: 'completed' | 'failed', seconds: number): void {
    const children = this.#workflow(workflow);
    const completed = outcome === 'completed';
    (completed ? children.completed : children.failed).value++;
    this.#histograms.workflow!.observe(completed ? children.completedDuration : children.failedDuration, seconds);
  }

  activityAttempted(
    activity: string,
    outcome: 'completed' | 'retried' | 'failed',
    scheduleToStartSeconds: number,
    runSeconds: number,
  ): void {
    const children = this.#activity(activity);
    children.attempts.value++;
    this.#histograms.scheduleToStart!.observe(children.scheduleToStart, scheduleToStartSeconds);
    this.#histograms.run!.observe(children.run[outcome], runSeconds);
  }

  /**
   * A step that records an activity's failure for good committed. Counted here, not when the
   * attempt failed: a workflow that ended before the attempt did takes no failure from it.
   */
  activityFailed(activity: string): void {
    this.#activity(activity).failures.value++;
  }

  /**
   * A step that stores the next attempt of an activity committed. Counted here, not when the
   * attempt failed: an attempt that fails after its workflow ended is never run again.
   */
  activityRetried(activity: string): void {
    this.#activity(activity).retries.value++;
  }

  #workflow(name: string): WorkflowChildren {
    let children = this.#byWorkflow.get(name);
    if (!children) {
      const { step, workflow } = this.#histograms;
      const { started, completed, failed } = this.#counters;
      children = {
        step: step!.child(name),
        started: started!.child(name),
        completed: completed!.child(name),
        failed: failed!.child(name),
        completedDuration: workflow!.child(name, 'completed'),
        failedDuration: workflow!.child(name, 'failed'),
      };
      this.#byWorkflow.set(name, children);
    }
    return children;
  }

  #activity(name: string): ActivityChildren {
    let children = this.#byActivity.get(name);
    if (!children) {
      const { scheduleToStart, run } = this.#histograms;
      const { attempts, failures, retries } = this.#counters;
      children = {
        attempts: attempts!.child(name),
        failures: failures!.child(name),
        retries: retries!.child(name),
        scheduleToStart: scheduleToStart!.child(name),
        run: {
          completed: run!.child(name, 'completed'),
          retried: run!.child(name, 'retried'),
          failed: run!.child(name, 'failed'),
        },
      };
      this.#byActivity.set(name, children);
    }
    return children;
  }
}
