/** The task the latency floor sends to its thread: returns at once, so only the hop is timed. */
export default function noop(value: number): number {
  return value;
}
