import { Gauge, type Registry } from 'prom-client';

import { MetricName } from './metric-names.js';

/** Live numbers the gauges read at scrape time; the engine implements them. */
export interface QueueDepths {
  walPendingEvents(): number;
  walFlushesInFlight(): number;
  mailboxMessages(): number;
  actorsInMemory(): number;
  activityTasksQueued(): number;
  activityTasksRunning(): number;
  timersArmed(): number;
  timersOverdue(): number;
  workflowsPending(): number;
  workflowsWaitingForRoom(): number;
  resultWaiters(): number;
  leasesHeld(): number;
  effectsHeldBack(): number;
}

/** Registers one gauge per queue depth, each reading `depths` when scraped. */
export function registerQueueGauges(registry: Registry, depths: QueueDepths): void {
  const gauge = (name: string, help: string, read: () => number): void => {
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  };
  gauge(MetricName.WalPendingEvents, 'History events appended and not yet committed.', depths.walPendingEvents);
  gauge(MetricName.WalFlushesInFlight, 'WAL flushes being committed now.', depths.walFlushesInFlight);
  gauge(MetricName.MailboxMessages, 'Messages waiting in actor mailboxes, all actors together.', depths.mailboxMessages);
  gauge(MetricName.ActorsInMemory, 'Workflow actors in memory.', depths.actorsInMemory);
  gauge(MetricName.ActivityTasksQueued, 'Activity attempts waiting for a free thread.', depths.activityTasksQueued);
  gauge(MetricName.ActivityTasksRunning, 'Activity attempts running.', depths.activityTasksRunning);
  gauge(MetricName.TimersArmed, 'Durable timers armed in memory (sleeps, timeouts, retries, starts).', depths.timersArmed);
  gauge(MetricName.TimersOverdue, 'Armed timers past their due time and not yet fired.', depths.timersOverdue);
  gauge(MetricName.WorkflowsPending, 'Delayed starts armed in memory (this engine\'s own, and those due within two poll intervals).', depths.workflowsPending);
  gauge(
    MetricName.WorkflowsWaitingForRoom,
    'Workflows with a start or an activity result waiting for room among the actors in memory.',
    depths.workflowsWaitingForRoom,
  );
  gauge(MetricName.ResultWaiters, 'Callers waiting in result() on this engine.', depths.resultWaiters);
  gauge(MetricName.LeasesHeld, 'Workflow names whose lease this engine held at its last successful claim (it runs their workflows).', depths.leasesHeld);
  gauge(
    MetricName.EffectsHeldBack,
    'Timers and activity attempts held back while a lease is overdue (no renewal for leaseTtlMs), until a renewal keeps the name.',
    depths.effectsHeldBack,
  );
}
