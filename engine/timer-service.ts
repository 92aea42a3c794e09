/**
 * The longest delay Node's timers keep (2^31-1 ms, 24.8 days); past it they fire at once. Later
 * timers are re-checked at this interval.
 */
export const MAX_DELAY_MS = 2 ** 31 - 1;

/** One armed timer. `key` identifies it for replacement and disarming. */
export interface ArmedTimer<Payload> {
  key: string;
  dueAt: number;
  payload: Payload;
}

/** An armed timer in the heap, with the order it was armed in (ties on `dueAt` fire in that order). */
interface HeapEntry<Payload> extends ArmedTimer<Payload> {
  order: number;
}

/** Whether `a` fires before `b`: the earlier due, or, due at the same ms, the one armed first. */
const isBefore = <Payload>(a: HeapEntry<Payload>, b: HeapEntry<Payload>): boolean =>
  a.dueAt < b.dueAt || (a.dueAt === b.dueAt && a.order < b.order);

/**
 * All of the engine's in-memory timers (workflow sleeps, event-wait timeouts, activity retries,
 * delayed starts) in one binary min-heap under a single `setTimeout` for the earliest. The timers
 * themselves are durable rows; this only decides when to act on the committed ones. Timers due at
 * the same ms fire in the order they were armed, as `setTimeout`'s do: a heap alone is not stable,
 * and would hand a workflow the sleeps it started together in another order.
 *
 * Disarming is lazy: the entry stays in the heap and is skipped when it surfaces, because its key
 * no longer maps to it.
 */
export class TimerService<Payload> {
  readonly #heap: HeapEntry<Payload>[] = [];
  readonly #byKey = new Map<string, HeapEntry<Payload>>();
  readonly #onFire: (timer: ArmedTimer<Payload>) => void;
  readonly #onError: (error: unknown) => void;
  #handle: NodeJS.Timeout | undefined;
  #handleDueAt = Infinity;
  #isClosed = false;
  /** Arms so far: the next timer's `order`. */
  #armed = 0;

  /** `onError` hears of a callback that threw; the other due timers fire regardless. */
  constructor(onFire: (timer: ArmedTimer<Payload>) => void, onError: (error: unknown) => void = () => undefined) {
    this.#onFire = onFire;
    this.#onError = onError;
  }

  /** Timers armed and not yet fired. */
  get size(): number {
    return this.#byKey.size;
  }

  /** Timers whose time has come but that have not fired yet (the callback is behind). */
  overdue(now: number): number {
    let count = 0;
    for (const timer of this.#byKey.values()) if (timer.dueAt <= now) count++;
    return count;
  }

  /** Armed timers whose payload satisfies `predicate`. */
  count(predicate: (payload: Payload) => boolean): number {
    let count = 0;
    for (const timer of this.#byKey.values()) if (predicate(timer.payload)) count++;
    return count;
  }

  has(key: string): boolean {
    return this.#byKey.has(key);
  }

  /** Arms (or re-arms with a new time) the timer `key`. */
  arm(key: string, dueAt: number, payload: Payload): void {
    if (this.#isClosed) return;
    const timer = { key, dueAt, payload, order: this.#armed++ };
    this.#byKey.set(key, timer);
    this.#push(timer);
    if (dueAt < this.#handleDueAt) this.#reschedule();
  }

  disarm(key: string): void {
    if (!this.#byKey.delete(key)) return;
    // Disarmed entries wait in the heap until they surface; rebuild when they dominate it.
    if (this.#heap.length > 1024 && this.#heap.length > 2 * this.#byKey.size) {
      this.#heap.length = 0;
      for (const timer of this.#byKey.values()) this.#push(timer);
      this.#reschedule();
    }
  }

  /** Disarms every timer whose payload satisfies `predicate`. */
  disarmWhere(predicate: (payload: Payload) => boolean): void {
    for (const [key, timer] of this.#byKey) if (predicate(timer.payload)) this.disarm(key);
  }

  close(): void {
    this.#isClosed = true;
    if (this.#handle) clearTimeout(this.#handle);
    this.#heap.length = 0;
    this.#byKey.clear();
  }

  #reschedule(): void {
    if (this.#handle) clearTimeout(this.#handle);
    this.#handle = undefined;
    this.#handleDueAt = Infinity;
    const next = this.#heap[0];
    if (!next || this.#isClosed) return;
    this.#handleDueAt = next.dueAt;
    const delay = Math.min(Math.max(0, next.dueAt - Date.now()), MAX_DELAY_MS);
    this.#handle = setTimeout(() => this.#fireDue(), delay);
    // Pending timers alone must not keep a process alive; the engine's own handles decide that.
    this.#handle.unref();
  }

  #fireDue(): void {
    this.#handle = undefined;
    this.#handleDueAt = Infinity;
    const now = Date.now();
    for (;;) {
      const top = this.#heap[0];
      if (!top || top.dueAt > now) break;
      this.#pop();
      if (this.#byKey.get(top.key) !== top) continue; // disarmed or re-armed
      this.#byKey.delete(top.key);
      try {
        this.#onFire({ key: top.key, dueAt: top.dueAt, payload: top.payload });
      } catch (error) {
        this.#onError(error);
      }
    }
    this.#reschedule();
  }

  #push(timer: HeapEntry<Payload>): void {
    const heap = this.#heap;
    heap.push(timer);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!isBefore(timer, heap[parent]!)) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = timer;
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && isBefore(heap[right]!, heap[left]!) ? right : left;
      if (!isBefore(heap[child]!, last)) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
  }
}
