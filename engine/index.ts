/** duraflow's public API: everything importable from 'duraflow'. */
export { createEngine } from './create-engine.js';
export type { Engine, WorkflowInput, WorkflowOutput } from './engine.js';
export { createClient } from './client.js';
export type { Client } from './client.js';
export type { ClientOptions, ConnectionOptions, EngineOptions, Logger } from './options.js';
export type { LeaseState, ResultOptions, SendEventOptions, StartWorkflowOptions, WorkflowHandle } from './workflow-store.js';
export type { WaitingActivity, WaitingOn, WorkflowState } from './workflow-state.js';
export type { HistoryEvent, SerializedFailure } from '../actors/history.js';
export { EventType } from '../actors/history.js';
export type {
  ActivityStubs,
  WaitForEventOptions,
  WorkflowContext,
  WorkflowFunction,
  WorkflowInfo,
} from '../actors/workflow-context.js';
export type { ActivityContext } from './activity-context.js';
export type { ActivityFunction } from './activity-runner.js';
export type { ActivityOptions, RetryPolicy } from './retry-policy.js';
export { DEFAULT_RETRY_POLICY } from './retry-policy.js';
export { Label as MetricLabel, MetricName } from '../metrics/metric-names.js';
export {
  ActivityFailure,
  ConfigurationError,
  DatabaseUnavailableError,
  EngineClosedError,
  EngineError,
  ErrorCode,
  EventIdReusedError,
  InvalidArgumentError,
  NameTakenOverError,
  NonDeterminismError,
  NonRetryableError,
  PayloadTooLargeError,
  TimeoutError,
  UnknownWorkflowError,
  UnreadableHistoryError,
  UnreadableStateError,
  WorkflowAlreadyExistsError,
  WorkflowClosedError,
  WorkflowFailedError,
  WorkflowNotFoundError,
} from './errors.js';
export type { StoredField } from './errors.js';
