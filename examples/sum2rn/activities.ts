import type { ActivityContext } from 'duraflow';

/** One xorshift32 step from `seed`, repeated `rounds` times. */
function xorshift(seed: number, rounds: number): number {
  let x = seed >>> 0 || 1;
  for (let i = 0; i < rounds; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
  }
  return x;
}

/** The first random number: xorshift of the seed. */
export async function generateRandomNumber1(input: { seed: number }, _ctx: ActivityContext): Promise<number> {
  return xorshift(input.seed, 16) % 1_000;
}

/** The second random number, from a different number of rounds. */
export async function generateRandomNumber2(input: { seed: number }, _ctx: ActivityContext): Promise<number> {
  return xorshift(input.seed, 32) % 1_000;
}
