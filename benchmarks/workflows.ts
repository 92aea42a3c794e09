import type { WorkflowContext } from 'duraflow';

type Activities = typeof import('./activities.js');

/** S sequential trivial activities. */
export async function steps(ctx: WorkflowContext, input: { steps: number }): Promise<number> {
  const { step } = ctx.activities<Activities>({ retry: { maxAttempts: 3 } });
  let x = 0;
  for (let i = 0; i < input.steps; i++) x = await step(x);
  return x;
}

/** F parallel trivial activities, awaited together. */
export async function fanout(ctx: WorkflowContext, input: { fanout: number }): Promise<number> {
  const { step } = ctx.activities<Activities>({ retry: { maxAttempts: 3 } });
  const results = await Promise.all(Array.from({ length: input.fanout }, (_, i) => step(i)));
  return results.length;
}

/** T short durable timers in a row. */
export async function timers(ctx: WorkflowContext, input: { timers: number; ms: number }): Promise<number> {
  for (let i = 0; i < input.timers; i++) await ctx.sleep(input.ms);
  return input.timers;
}

/** Parks on a long timer (the memory scenario measures what a parked workflow costs). */
export async function parked(ctx: WorkflowContext): Promise<void> {
  ctx.setVar('parked', true);
  await ctx.sleep(24 * 3600_000);
}
