/**
 * The lists of a step's write and effects that most steps leave empty start as this one shared
 * array, never written: `appended` replaces it with a list of their own on the first item. They
 * live until the step commits, long enough to outlive a young-generation collection and be
 * copied; and an array grown by push from empty reserves 17 slots. The lists are typed readonly
 * so that nothing pushes into the shared one: they change only through the functions below.
 */
export const NO_ITEMS: readonly never[] = Object.freeze([]);

/** `list` with `item` at its end: a new one-item list for an empty one, else `list` itself. */
export function appended<T>(list: readonly T[], item: T): readonly T[] {
  if (list.length === 0) return [item];
  (list as T[]).push(item);
  return list;
}

/** `list` without its `index`-th item (which must exist, so `list` is not the shared empty one). */
export function removedAt<T>(list: readonly T[], index: number): readonly T[] {
  (list as T[]).splice(index, 1);
  return list;
}

/** `list` with its `index`-th item (which must exist) replaced by `item`. */
export function replacedAt<T>(list: readonly T[], index: number, item: T): readonly T[] {
  (list as T[])[index] = item;
  return list;
}
