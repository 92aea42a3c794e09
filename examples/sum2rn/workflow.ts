import type { WorkflowContext } from 'duraflow';

export interface Sum2rnInput {
  seed: number;
}

/** Computes two random numbers in activities (in parallel) and returns their sum. */
export async function sum2rn(ctx: WorkflowContext, input: Sum2rnInput): Promise<{ a: number; b: number; sum: number }> {
  const { generateRandomNumber1, generateRandomNumber2 } = ctx.activities<typeof import('./activities.js')>({
    retry: { maxAttempts: 3 },
  });
  const [a, b] = await Promise.all([generateRandomNumber1({ seed: input.seed }), generateRandomNumber2({ seed: input.seed })]);
  ctx.setVar('a', a);
  ctx.setVar('b', b);
  return { a, b, sum: a + b };
}
