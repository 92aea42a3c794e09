/**
 * The rules by which stored JSON text is readable: what duraflow wrote, not a row written or
 * changed by hand, say. Replay, `inspect` and the recovery of unfinished activities read history
 * payloads by the one rule below, so they agree on which rows are unreadable, and none of them
 * takes such a row for changed code. Pure helpers, no I/O: actors use them as they use `rows.ts`.
 */

/** Why JSON that parsed is not an object, e.g. "JSON null, not an object". */
function notAnObject(value: unknown): TypeError {
  const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
  return new TypeError(`JSON ${kind}, not an object`);
}

/** `text` parsed as a JSON object; throws JSON.parse's SyntaxError, or a TypeError for other JSON. */
export function readJsonObject(text: string): Record<string, unknown> {
  const value: unknown = JSON.parse(text);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw notAnObject(value);
  return value as Record<string, unknown>;
}

/**
 * The payload of a history row of type `type`, as the object duraflow wrote (`{}` for a row
 * without one). Throws, with what is wrong, for a payload it did not write: one that is not a
 * JSON object, or an ActivityScheduled one that names no activity (which replay would otherwise
 * report as code that schedules another activity).
 */
export function readHistoryPayload(type: string, text: string | null): Record<string, unknown> {
  const payload = text ? readJsonObject(text) : {};
  if (type === 'ActivityScheduled' && typeof payload.activityName !== 'string') {
    throw new TypeError('the ActivityScheduled payload names no activity');
  }
  return payload;
}
