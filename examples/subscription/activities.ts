import { type ActivityContext, NonRetryableError } from 'duraflow';

export interface PaymentInput {
  value: number;
  /** Chance that the payment goes through, 0..1. @default 0.3 (as in the original example) */
  successRate?: number;
}

/**
 * Charges a payment. Like the original example it succeeds only 30% of the time, and a decline is
 * final: retrying a declined card does not help, so it throws NonRetryableError.
 */
export async function payment(input: PaymentInput, ctx: ActivityContext): Promise<{ charged: number; activityId: string }> {
  if (Math.random() < (input.successRate ?? 0.3)) return { charged: input.value, activityId: ctx.activityId };
  throw new NonRetryableError(`payment of ${input.value} declined`);
}
