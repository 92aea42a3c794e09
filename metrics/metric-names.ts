/**
 * Every metric name and label name duraflow exports. Names follow Prometheus conventions:
 * `duraflow_` prefix, base units as suffix (`_seconds`, `_total`), snake case.
 */

/** Label names. Only bounded values: a workflow name, an activity name, an outcome. */
export const Label = {
  Workflow: 'workflow',
  Activity: 'activity',
  Outcome: 'outcome',
} as const;

export const MetricName = {
  // Queue depths (gauges, read at scrape time)
  WalPendingEvents: 'duraflow_wal_pending_events',
  WalFlushesInFlight: 'duraflow_wal_flushes_in_flight',
  MailboxMessages: 'duraflow_actor_mailbox_messages',
  ActorsInMemory: 'duraflow_actors_in_memory',
  ActivityTasksQueued: 'duraflow_activity_tasks_queued',
  ActivityTasksRunning: 'duraflow_activity_tasks_running',
  TimersArmed: 'duraflow_timers_armed',
  TimersOverdue: 'duraflow_timers_overdue',
  WorkflowsPending: 'duraflow_workflows_pending',
  WorkflowsWaitingForRoom: 'duraflow_workflows_waiting_for_room',
  ResultWaiters: 'duraflow_result_waiters',
  LeasesHeld: 'duraflow_leases_held',
  EffectsHeldBack: 'duraflow_effects_held_back',

  // Latencies and sizes (histograms)
  WalFlushDuration: 'duraflow_wal_flush_duration_seconds',
  WalBatchEvents: 'duraflow_wal_batch_events',
  WorkflowStepDuration: 'duraflow_workflow_step_duration_seconds',
  ActivityScheduleToStart: 'duraflow_activity_schedule_to_start_seconds',
  ActivityRunDuration: 'duraflow_activity_run_duration_seconds',
  TimerLateness: 'duraflow_timer_lateness_seconds',
  WorkflowDuration: 'duraflow_workflow_duration_seconds',
  RehydrationDuration: 'duraflow_actor_rehydration_duration_seconds',

  // Counters
  WorkflowsStarted: 'duraflow_workflows_started_total',
  WorkflowsCompleted: 'duraflow_workflows_completed_total',
  WorkflowsFailed: 'duraflow_workflows_failed_total',
  ActivityAttempts: 'duraflow_activity_attempts_total',
  ActivityFailures: 'duraflow_activity_failures_total',
  ActivityRetries: 'duraflow_activity_retries_total',
  EventsWritten: 'duraflow_events_written_total',
  WalFlushes: 'duraflow_wal_flushes_total',
  WalFlushErrors: 'duraflow_wal_flush_errors_total',
  ActorEvictions: 'duraflow_actor_evictions_total',
  ActorRehydrations: 'duraflow_actor_rehydrations_total',
  NonDeterminismErrors: 'duraflow_non_determinism_errors_total',
} as const;
