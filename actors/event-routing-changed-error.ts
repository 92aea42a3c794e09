/** Replay handed a recorded event to another wait (or none) than the run that recorded it did. */
export class EventRoutingChangedError extends Error {
  /** The wait concerned: the recorded one, else the one replay chose. */
  readonly commandId: number | null;
  readonly expected: string;
  readonly got: string;
  constructor(eventName: string, recorded: number | undefined, replayed: number | undefined) {
    const taker = (wait: number | undefined): string =>
      `event ${JSON.stringify(eventName)} ${wait === undefined ? 'taken by no wait' : `taken by wait #${wait}`}`;
    super(`${taker(recorded)} on record, ${taker(replayed)} on replay`);
    this.name = 'EventRoutingChangedError';
    this.commandId = recorded ?? replayed ?? null;
    this.expected = taker(recorded);
    this.got = taker(replayed);
  }
}
