/** Cleared slots at the front below which the array is not compacted (moving a few costs more than it saves). */
const COMPACT_AFTER = 1024;

/**
 * A first-in, first-out queue whose `shift` costs the same however many items it holds.
 * `Array.prototype.shift` moves every remaining item once an array is large (V8 trims the front in
 * place only for small ones), so a workflow taking a backlog of kept events one at a time, or
 * answering thousands of waits of one name, paid for the whole backlog at each.
 *
 * The items are `#items` from `#head` on; the slots before it are cleared, and dropped once they
 * are at least half of the array, so it holds at most twice the items queued (plus COMPACT_AFTER).
 */
export class Fifo<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  /** Items queued. */
  get length(): number {
    return this.#items.length - this.#head;
  }

  /** Slots the queue holds: its items and the cleared ones not dropped yet. */
  get slots(): number {
    return this.#items.length;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  /** Takes the oldest item, or undefined if there is none. */
  shift(): T | undefined {
    const items = this.#items;
    if (this.#head === items.length) return undefined;
    const item = items[this.#head];
    items[this.#head++] = undefined;
    if (this.#head === items.length) {
      items.length = 0;
      this.#head = 0;
    } else if (this.#head >= COMPACT_AFTER && this.#head * 2 >= items.length) {
      items.copyWithin(0, this.#head);
      items.length -= this.#head;
      this.#head = 0;
    }
    return item;
  }

  /** Removes the oldest occurrence of `item`, if any. */
  remove(item: T): void {
    const at = this.#items.indexOf(item, this.#head);
    if (at === this.#head) this.shift();
    else if (at !== -1) this.#items.splice(at, 1);
  }

  /** The items, oldest first, as an array of their own. */
  toArray(): T[] {
    return this.#items.slice(this.#head) as T[];
  }
}
