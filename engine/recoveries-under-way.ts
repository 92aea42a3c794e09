/**
 * What a recovery re-delivers: the workflows of `workflowIds` if given, else of `names` if given,
 * else every workflow of the names the engine holds.
 */
export interface RecoveryScope {
  names?: readonly string[];
  workflowIds?: readonly string[];
}

/**
 * The recoveries under way and what they cover, counted per name and per workflow so that asking
 * about one workflow costs the same however many run: a failed flush rebuilds each of its
 * workflows with a recovery of its own.
 */
export class RecoveriesUnderWay {
  #coveringEverything = 0;
  readonly #byName = new Map<string, number>();
  readonly #byWorkflow = new Map<string, number>();
  /** Each recovery's settled promise (never rejected), with its scope. */
  readonly #underWay = new Map<Promise<void>, RecoveryScope>();

  get size(): number {
    return this.#underWay.size;
  }

  /** Counts `recovery` under way until it settles; resolves (never rejects) when it has. */
  add(recovery: Promise<void>, scope: RecoveryScope): Promise<void> {
    // Reactions run in the order they were added: a caller awaiting `recovery` after this call
    // finds it no longer counted.
    const settled: Promise<void> = recovery.then(
      () => this.#remove(settled),
      () => this.#remove(settled),
    );
    this.#underWay.set(settled, scope);
    this.#count(scope, 1);
    return settled;
  }

  /** Whether a recovery under way covers the workflow (and so delivers its events itself). */
  covers(workflowName: string, workflowId: string): boolean {
    return this.coversName(workflowName) || this.#byWorkflow.has(workflowId);
  }

  /** Whether a recovery under way covers every workflow of the name. */
  coversName(workflowName: string): boolean {
    return this.#coveringEverything > 0 || this.#byName.has(workflowName);
  }

  /** Resolves once every recovery under way now has settled. */
  async settled(): Promise<void> {
    await Promise.all(this.#underWay.keys());
  }

  #remove(settled: Promise<void>): void {
    const scope = this.#underWay.get(settled)!;
    this.#underWay.delete(settled);
    this.#count(scope, -1);
  }

  #count({ names, workflowIds }: RecoveryScope, by: 1 | -1): void {
    if (workflowIds) for (const id of workflowIds) countIn(this.#byWorkflow, id, by);
    else if (names) for (const name of names) countIn(this.#byName, name, by);
    else this.#coveringEverything += by;
  }
}

function countIn(counts: Map<string, number>, key: string, by: 1 | -1): void {
  const count = (counts.get(key) ?? 0) + by;
  if (count === 0) counts.delete(key);
  else counts.set(key, count);
}
