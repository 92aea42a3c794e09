import { describe, expect, it } from 'vitest';

import { EventType } from '../../../actors/history.js';
import { readHistoryPayload } from '../../../storage/stored-json.js';

/** A payload of each type as duraflow writes it. */
const written: Record<string, string | null> = {
  [EventType.WorkflowStarted]: '{"workflowName":"w","version":"1","input":{"n":1}}',
  [EventType.ActivityScheduled]: '{"activityName":"charge","input":5,"options":{}}',
  [EventType.ActivityCompleted]: '{"activityName":"charge","attempts":1}',
  [EventType.ActivityFailed]: '{"activityName":"charge","attempts":3,"failure":{"name":"Error","message":"declined"}}',
  [EventType.TimerStarted]: '{"dueAt":1700000000000}',
  [EventType.TimerFired]: null,
  [EventType.EventWaitStarted]: '{"eventName":"go","timeoutAt":1700000000000}',
  [EventType.EventReceived]: '{"eventName":"go","inboxId":12,"resolves":4,"payload":"now"}',
  [EventType.WorkflowCompleted]: '{}',
  [EventType.WorkflowFailed]: '{"failure":{"name":"Error","message":"no"}}',
};

/** Payloads that lack a field replay reads, or hold it in another form. */
const misshapen: [type: string, payload: string, field: string][] = [
  [EventType.ActivityScheduled, '{"options":{}}', 'activityName'],
  [EventType.ActivityFailed, '{"activityName":"charge","failure":{"name":"Error","message":"declined"}}', 'attempts'],
  [EventType.ActivityFailed, '{"activityName":"charge","attempts":"3","failure":{"name":"Error","message":"declined"}}', 'attempts'],
  [EventType.ActivityFailed, '{"activityName":"charge","attempts":1.5,"failure":{"name":"Error","message":"declined"}}', 'attempts'],
  [EventType.ActivityFailed, '{"activityName":"charge","attempts":3}', 'failure'],
  [EventType.ActivityFailed, '{"activityName":"charge","attempts":3,"failure":"declined"}', 'failure'],
  [EventType.ActivityFailed, '{"activityName":"charge","attempts":3,"failure":{"message":"declined"}}', 'failure'],
  [EventType.EventWaitStarted, '{}', 'eventName'],
  [EventType.EventWaitStarted, '{"eventName":7}', 'eventName'],
  [EventType.EventWaitStarted, '{"eventName":"go","timeoutAt":"soon"}', 'timeoutAt'],
  [EventType.EventWaitStarted, '{"eventName":"go","timeoutAt":null}', 'timeoutAt'],
  [EventType.TimerStarted, '{}', 'dueAt'],
  [EventType.TimerStarted, '{"dueAt":"1700000000000"}', 'dueAt'],
  [EventType.EventReceived, '{"inboxId":12,"resolves":4}', 'eventName'],
  [EventType.EventReceived, '{"eventName":"go","resolves":4}', 'inboxId'],
  [EventType.EventReceived, '{"eventName":"go","inboxId":12,"resolves":"4"}', 'resolves'],
  [EventType.EventReceived, '{"eventName":"go","inboxId":12,"resolves":null}', 'resolves'],
];

describe('readHistoryPayload', () => {
  it.each(Object.entries(written))('reads the %s payload duraflow writes', (type, payload) => {
    expect(readHistoryPayload(type, payload)).toEqual(payload === null ? {} : JSON.parse(payload));
  });

  it('reads a TimerStarted payload whose dueAt has a fraction (a sleep of 1.5 ms)', () => {
    expect(readHistoryPayload(EventType.TimerStarted, '{"dueAt":1700000000000.5}')).toEqual({ dueAt: 1700000000000.5 });
  });

  it('reads an EventReceived payload without resolves (an event no wait took)', () => {
    expect(readHistoryPayload(EventType.EventReceived, '{"eventName":"go","inboxId":12}')).toEqual({ eventName: 'go', inboxId: 12 });
  });

  it('leaves fields of the right form to replay, whatever their value (changed code is not unreadable)', () => {
    expect(readHistoryPayload(EventType.EventWaitStarted, '{"eventName":"other"}')).toEqual({ eventName: 'other' });
    expect(readHistoryPayload(EventType.EventReceived, '{"eventName":"go","inboxId":12,"resolves":99}')).toMatchObject({ resolves: 99 });
  });

  it.each(misshapen)('refuses a %s payload %s, naming %s', (type, payload, field) => {
    expect(() => readHistoryPayload(type, payload)).toThrow(TypeError);
    expect(() => readHistoryPayload(type, payload)).toThrow(`the ${type} payload's ${field} must be`);
  });

  it('refuses a missing payload where a field is required', () => {
    expect(() => readHistoryPayload(EventType.EventWaitStarted, null)).toThrow("the EventWaitStarted payload's eventName must be a string; there is none");
  });

  it('refuses a payload that is not a JSON object, whatever its type', () => {
    expect(() => readHistoryPayload(EventType.TimerFired, '[1]')).toThrow('JSON an array, not an object');
    expect(() => readHistoryPayload(EventType.WorkflowCompleted, '{"result":')).toThrow(SyntaxError);
  });
});
