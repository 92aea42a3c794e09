/** Benchmark activities: trivial, so the engine (not the activity) is what gets measured. */

export async function step(x: number): Promise<number> {
  return x + 1;
}
