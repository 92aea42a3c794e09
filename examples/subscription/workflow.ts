import type { WorkflowContext } from 'duraflow';

export interface SubscriptionInput {
  totalAmount: number;
  cycles: number;
  cycleDurationMs: number;
  /** Passed to the payment activity. @default 0.3 */
  successRate?: number;
}

export interface SubscriptionOutput {
  paid: number;
  overdue: number;
}

/** Splits `total` into `cycles` whole amounts; the last one takes the remainder. */
export function paymentAmounts(total: number, cycles: number): number[] {
  const each = Math.floor(total / cycles);
  return Array.from({ length: cycles }, (_, i) => (i === cycles - 1 ? total - each * (cycles - 1) : each));
}

/**
 * A subscription: one payment per cycle, each at its due time. A failed payment is carried over
 * and added to the next cycle's amount. Its progress is visible through variables.
 */
export async function subscription(ctx: WorkflowContext, input: SubscriptionInput): Promise<SubscriptionOutput> {
  const { payment } = ctx.activities<typeof import('./activities.js')>({ retry: { maxAttempts: 1 } });
  const startedAt = ctx.info.startedAt.getTime();
  const amounts = paymentAmounts(input.totalAmount, input.cycles);
  let paid = 0;
  let overdue = 0;
  for (let cycle = 0; ; cycle++) {
    ctx.setVar('paid', paid);
    ctx.setVar('overdue', overdue);
    ctx.setVar('currentCycle', cycle);
    if (cycle >= input.cycles) break;
    const amountToPay = amounts[cycle]! + overdue;
    ctx.setVar('amountToPay', amountToPay);
    await ctx.sleepUntil(startedAt + cycle * input.cycleDurationMs);
    try {
      await payment({ value: amountToPay, successRate: input.successRate });
      paid += amountToPay;
      overdue = 0;
      ctx.setVar(`cycle_${cycle}_paid_amount`, amountToPay);
    } catch (error) {
      overdue += amounts[cycle]!;
      ctx.setVar(`cycle_${cycle}_err`, (error as Error).message);
    }
    ctx.setVar('amountToPay', 0);
    ctx.setVar(`cycle_${cycle}_completed_at`, ctx.now().toISOString());
  }
  return { paid, overdue };
}
