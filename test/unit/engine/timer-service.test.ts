import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { type ArmedTimer, TimerService } from '../../../engine/timer-service.js';

const T0 = 1_700_000_000_000;

function service() {
  const fired: ArmedTimer<string>[] = [];
  const timers = new TimerService<string>((timer) => fired.push(timer));
  return { timers, fired, keys: () => fired.map((t) => t.key) };
}

describe('TimerService', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(T0);
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('fires timers in due order, whatever order they were armed in', () => {
    const { timers, fired, keys } = service();
    const dues = [50, 10, 40, 30, 20, 60, 5, 45, 15, 35];
    dues.forEach((d, i) => timers.arm(`k${i}`, T0 + d, `p${i}`));
    expect(timers.size).toBe(dues.length);
    vi.advanceTimersByTime(60);
    expect(fired.map((t) => t.dueAt)).toEqual([...dues].sort((a, b) => a - b).map((d) => T0 + d));
    expect(fired[0]).toEqual({ key: 'k6', dueAt: T0 + 5, payload: 'p6' });
    expect(keys()).toHaveLength(dues.length);
    expect(timers.size).toBe(0);
  });

  it('fires timers due at the same ms in the order they were armed', () => {
    const { timers, keys } = service();
    for (let i = 0; i < 8; i++) timers.arm(`k${i}`, T0 + 10, 'p');
    timers.arm('early', T0 + 5, 'p');
    vi.advanceTimersByTime(10);
    expect(keys()).toEqual(['early', 'k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7']);
  });

  it('fires nothing before its time and each timer exactly once', () => {
    const { timers, keys } = service();
    timers.arm('a', T0 + 100, 'a');
    vi.advanceTimersByTime(99);
    expect(keys()).toEqual([]);
    expect(timers.has('a')).toBe(true);
    vi.advanceTimersByTime(1);
    expect(keys()).toEqual(['a']);
    expect(timers.has('a')).toBe(false);
    vi.advanceTimersByTime(10_000);
    expect(keys()).toEqual(['a']);
  });

  it('fires a timer armed in the past at once', () => {
    const { timers, keys } = service();
    timers.arm('late', T0 - 5_000, 'x');
    vi.advanceTimersByTime(0);
    expect(keys()).toEqual(['late']);
  });

  it('re-arming a key replaces its time and payload (later)', () => {
    const { timers, fired } = service();
    timers.arm('a', T0 + 100, 'old');
    timers.arm('a', T0 + 300, 'new');
    expect(timers.size).toBe(1);
    vi.advanceTimersByTime(200);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(100);
    expect(fired).toEqual([{ key: 'a', dueAt: T0 + 300, payload: 'new' }]);
  });

  it('re-arming a key replaces its time and payload (earlier)', () => {
    const { timers, fired } = service();
    timers.arm('a', T0 + 300, 'old');
    timers.arm('a', T0 + 100, 'new');
    vi.advanceTimersByTime(1_000);
    expect(fired).toEqual([{ key: 'a', dueAt: T0 + 100, payload: 'new' }]);
  });

  it('disarm() stops a timer from firing and leaves the others', () => {
    const { timers, keys } = service();
    timers.arm('a', T0 + 10, 'a');
    timers.arm('b', T0 + 20, 'b');
    timers.arm('c', T0 + 30, 'c');
    timers.disarm('a');
    timers.disarm('missing');
    expect(timers.has('a')).toBe(false);
    expect(timers.size).toBe(2);
    vi.advanceTimersByTime(30);
    expect(keys()).toEqual(['b', 'c']);
  });

  it('a key disarmed and armed again fires once, at its new time', () => {
    const { timers, fired } = service();
    timers.arm('a', T0 + 10, 'first');
    timers.disarm('a');
    timers.arm('a', T0 + 20, 'second');
    vi.advanceTimersByTime(100);
    expect(fired).toEqual([{ key: 'a', dueAt: T0 + 20, payload: 'second' }]);
  });

  it('counts overdue timers', () => {
    const { timers } = service();
    timers.arm('a', T0 + 10, 'a');
    timers.arm('b', T0 + 20, 'b');
    timers.arm('c', T0 + 30, 'c');
    expect(timers.overdue(T0)).toBe(0);
    expect(timers.overdue(T0 + 20)).toBe(2);
    expect(timers.overdue(T0 + 1_000)).toBe(3);
  });

  it('lets the fire callback arm further timers, including ones already due', () => {
    const fired: string[] = [];
    const timers: TimerService<string> = new TimerService<string>((timer) => {
      fired.push(timer.key);
      if (timer.key === 'a') {
        timers.arm('now', Date.now(), 'x');
        timers.arm('later', Date.now() + 50, 'x');
      }
    });
    timers.arm('a', T0 + 10, 'a');
    timers.arm('b', T0 + 40, 'b');
    vi.advanceTimersByTime(10);
    expect(fired).toEqual(['a', 'now']);
    vi.advanceTimersByTime(50);
    expect(fired).toEqual(['a', 'now', 'b', 'later']);
  });

  it('handles due times beyond the longest setTimeout delay', () => {
    const { timers, keys } = service();
    const maxDelay = 2 ** 31 - 1;
    timers.arm('far', T0 + maxDelay + 1_000, 'x');
    vi.advanceTimersByTime(maxDelay);
    expect(keys()).toEqual([]);
    expect(timers.has('far')).toBe(true);
    vi.advanceTimersByTime(1_000);
    expect(keys()).toEqual(['far']);
  });

  it('rebuilds its heap when disarmed entries dominate it, and keeps firing correctly', () => {
    const { timers, keys } = service();
    const n = 2_000;
    for (let i = 0; i < n; i++) timers.arm(`k${i}`, T0 + 1_000 + i, `p${i}`);
    for (let i = 0; i < 1_500; i++) timers.disarm(`k${i}`);
    expect(timers.size).toBe(500);
    // The rebuild reschedules for the earliest live timer at that moment (k1001, when fewer than
    // half the 2,000 entries were live), instead of waking for the long-gone k0.
    vi.advanceTimersToNextTimer();
    expect(Date.now()).toBe(T0 + 1_000 + 1_001);
    expect(keys()).toEqual([]);
    vi.advanceTimersByTime(n);
    expect(keys()).toEqual(Array.from({ length: 500 }, (_, i) => `k${1_500 + i}`));
    expect(timers.size).toBe(0);
  });

  it('keeps a single setTimeout for any number of timers', () => {
    const { timers } = service();
    for (let i = 0; i < 100; i++) timers.arm(`k${i}`, T0 + 100 - i, 'x');
    expect(vi.getTimerCount()).toBe(1);
  });

  it('close() cancels everything and ignores later arms', () => {
    const { timers, keys } = service();
    timers.arm('a', T0 + 10, 'a');
    timers.close();
    expect(timers.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
    timers.arm('b', T0 + 10, 'b');
    timers.disarm('a');
    expect(timers.size).toBe(0);
    vi.advanceTimersByTime(100);
    expect(keys()).toEqual([]);
  });

  it('counts armed timers by payload', () => {
    const { timers } = service();
    timers.arm('a', T0 + 10, 'retry');
    timers.arm('b', T0 + 10, 'timer');
    timers.arm('c', T0 + 10, 'retry');
    timers.disarm('c');
    expect(timers.count((p) => p === 'retry')).toBe(1);
    expect(timers.count(() => true)).toBe(2);
  });
});
