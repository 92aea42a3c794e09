/** A one-line progress bar on stderr (only when stderr is a terminal). */
export class Progress {
  readonly #label: string;
  readonly #total: number;
  #done = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(label: string, total: number) {
    this.#label = label;
    this.#total = total;
    if (process.stderr.isTTY) {
      this.#timer = setInterval(() => this.#draw(), 200);
      this.#timer.unref();
    }
  }

  tick(n = 1): void {
    this.#done += n;
  }

  stop(): void {
    if (!this.#timer) return;
    clearInterval(this.#timer);
    this.#draw();
    process.stderr.write('\n');
  }

  #draw(): void {
    const width = 30;
    const filled = Math.round((this.#done / Math.max(1, this.#total)) * width);
    process.stderr.write(
      `\r${this.#label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${this.#done}/${this.#total}`,
    );
  }
}
