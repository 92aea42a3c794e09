/**
 * What a workflow awaits, by command id. Most workflows await one thing at a time: that one is
 * kept in two fields, and a Map is made only for the others. A Map reallocates its table when
 * its last entry goes and again when the next comes, once per step, and that table then lives
 * through the step's round trip (long enough for the young-generation collector to copy it).
 */
export class PendingCommands<T> {
  #soleId: number | undefined;
  #sole: T | undefined;
  #others: Map<number, T> | undefined;

  /** The value awaited under `commandId`, if any. */
  get(commandId: number): T | undefined {
    return commandId === this.#soleId ? this.#sole : this.#others?.get(commandId);
  }

  /** Records (or replaces) the value awaited under `commandId`. */
  set(commandId: number, value: T): void {
    if (this.#others?.has(commandId)) {
      this.#others.set(commandId, value);
    } else if (this.#soleId === undefined || this.#soleId === commandId) {
      this.#soleId = commandId;
      this.#sole = value;
    } else {
      (this.#others ??= new Map()).set(commandId, value);
    }
  }

  /** Forgets `commandId`, if it was awaited. */
  delete(commandId: number): void {
    if (commandId === this.#soleId) {
      this.#soleId = undefined;
      this.#sole = undefined;
    } else {
      this.#others?.delete(commandId);
    }
  }

  /** Whether any awaited value satisfies `test` (no list is made). */
  some(test: (value: T) => boolean): boolean {
    if (this.#soleId !== undefined && test(this.#sole as T)) return true;
    if (!this.#others) return false;
    for (const value of this.#others.values()) if (test(value)) return true;
    return false;
  }

  /** Every entry, in command id order (the order the workflow issued them). */
  entries(): [number, T][] {
    const entries: [number, T][] = this.#others ? [...this.#others] : [];
    if (this.#soleId !== undefined) entries.push([this.#soleId, this.#sole as T]);
    return entries.sort((a, b) => a[0] - b[0]);
  }
}
