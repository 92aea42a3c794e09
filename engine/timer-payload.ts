import type { TaskRow } from '../storage/rows.js';

/** What an armed timer does when it fires; each names its workflow's name, whose lease it needs. */
export type TimerPayload =
  | { kind: 'timer'; workflowId: string; workflowName: string; commandId: number }
  | { kind: 'retry'; workflowName: string; task: TaskRow }
  | { kind: 'start'; workflowId: string; workflowName: string };

/** The keys armed timers go by, one kind per payload kind. */
export const timerKey = (workflowId: string, commandId: number): string => `t\0${workflowId}\0${commandId}`;
export const retryKey = (workflowId: string, commandId: number): string => `r\0${workflowId}\0${commandId}`;
export const startKey = (workflowId: string): string => `s\0${workflowId}`;
