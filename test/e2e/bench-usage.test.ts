import { describe, expect, it } from 'vitest';

import { bench } from '../helpers/bench-harness.js';

describe('the benchmark harness command line', () => {
  it('refuses an unknown flag, a flag missing its value and an unknown scenario with exit code 2 and the reason', async () => {
    const cases: [string[], string][] = [
      [['--bogus'], "Unknown option '--bogus'"],
      [['--steps'], "Option '--steps <value>' argument missing"],
      [['--steps', '-1'], "Option '--steps' argument is ambiguous"],
      [['--scenario', 'stesp'], 'unknown --scenario "stesp"'],
      [['--steps=0'], '--steps must be a whole number of at least 1, got "0"'],
      [['--warm-up', '0.5'], '--warm-up must be a whole number of at least 1, got "0.5"'],
      [['--compare'], '--compare needs --database'],
      [['--concurrency', '0'], '--concurrency must be a whole number of at least 1, got "0"'],
      [['--scenario', 'latency', '--concurrency', '5'], "--concurrency is for the closed-loop scenarios (steps, fanout, timers) and latency's --rate half, not latency without it"],
      [['--scenario', 'latency', '--rate', 'fast'], '--rate must be a number of workflows per second >= 0, or half, got "fast"'],
      [['--scenario', 'steps', '--rate', 'half'], '--rate is for the latency scenario, not steps'],
      [['--scenario', 'latency', '--rate', 'half', '--compare', '--database', 'postgres://x'], '--compare has baselines for steps and for latency one at a time (no --rate), not for latency at a rate'],
    ];
    for (const [args, reason] of cases) {
      const run = await bench(args);
      expect({ args, code: run.code, reason: run.stderr.includes(reason), usage: run.stderr.includes('usage: npm run bench') }).toEqual({
        args,
        code: 2,
        reason: true,
        usage: true,
      });
      expect(run.stderr).not.toMatch(/\n\s+at /);
    }
  });
});
