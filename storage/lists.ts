/**
 * Lists that are usually empty and live through a workflow step's round trip (a step's rarely
 * used write and effect lists, an actor's mailbox and command list between activations) start as
 * this one shared array, never written: `appended` replaces it with a list of their own on the
 * first item. An array of their own would outlive a young-generation collection and be copied,
 * and one grown by push from empty reserves 17 slots. The lists are typed readonly so that
 * nothing pushes into the shared one: they change only through the functions below. It is not
 * frozen: Node 20's V8 runs `for...of` over a frozen (or sealed) array on its generic path, an
 * iterator and a result object per item, and a loop that has met one goes on that way for every
 * array it iterates. (A pure list helper, no I/O: actors use it as they use `rows.ts` to build a
 * step's write.)
 */
export const NO_ITEMS: readonly never[] = [];

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
