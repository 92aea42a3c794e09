/**
 * The empty list that a list reset by a consumer holds until its next item: one shared array, never
 * written (`appended` replaces it). A hot workflow's mailbox and command list sit empty for most of
 * each step's round trip, long enough for an array of their own to outlive a young-generation
 * collection and be copied; and an array grown by push from empty reserves 17 slots.
 */
export const NO_ITEMS: never[] = Object.freeze([]) as never[];

/** `list` with `item` at its end: a new one-item array for an empty list, else `list` itself. */
export function appended<T>(list: T[], item: T): T[] {
  if (list.length === 0) return [item];
  list.push(item);
  return list;
}
