/**
 * The rules by which stored JSON text is readable: what duraflow wrote, not a row written or
 * changed by hand, say. Replay, `inspect` and the recovery of unfinished activities read history
 * payloads by the one rule below, so they agree on which rows are unreadable, and none of them
 * takes such a row for changed code. Pure helpers, no I/O: actors use them as they use `rows.ts`.
 */

/** The kind of a parsed JSON value, for errors: "null", "an array", "a number", … */
function kindOf(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
}

/** Why JSON that parsed is not an object, e.g. "JSON null, not an object". */
function notAnObject(value: unknown): TypeError {
  return new TypeError(`JSON ${kindOf(value)}, not an object`);
}

/** `text` parsed as a JSON object; throws JSON.parse's SyntaxError, or a TypeError for other JSON. */
export function readJsonObject(text: string): Record<string, unknown> {
  const value: unknown = JSON.parse(text);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw notAnObject(value);
  return value as Record<string, unknown>;
}

/** What a field of a history payload must hold: JSON of the form its reader takes it for. */
type FieldForm = 'string' | 'integer' | 'time' | 'failure';

interface PayloadField {
  key: string;
  form: FieldForm;
  /** Whether duraflow leaves the field out when it has no value (an event no wait took). */
  isOptional: boolean;
}

const required = (key: string, form: FieldForm): PayloadField => ({ key, form, isOptional: false });

/**
 * The fields replay reads from each type's payload (the recovery of unfinished activities reads
 * `activityName` too), in the form it takes them for. A row whose field is missing, or of another
 * form, is one duraflow did not write: taken as it is, it would look like code that now schedules
 * another activity or waits for another event, and park the workflow. A field of the right form
 * with another value is left to replay, which reports it as changed code. The other types' payloads
 * hold nothing replay reads (a result, say, may be any JSON or none).
 */
const PAYLOAD_FIELDS: ReadonlyMap<string, readonly PayloadField[]> = new Map([
  ['ActivityScheduled', [required('activityName', 'string')]],
  ['ActivityFailed', [required('attempts', 'integer'), required('failure', 'failure')]],
  ['TimerStarted', [required('dueAt', 'time')]],
  ['EventWaitStarted', [required('eventName', 'string'), { key: 'timeoutAt', form: 'time', isOptional: true }]],
  [
    'EventReceived',
    [required('eventName', 'string'), required('inboxId', 'integer'), { key: 'resolves', form: 'integer', isOptional: true }],
  ],
]);

function hasForm(value: unknown, form: FieldForm): boolean {
  switch (form) {
    case 'string':
      return typeof value === 'string';
    case 'integer':
      return Number.isInteger(value);
    case 'time':
      return typeof value === 'number' && Number.isFinite(value);
    case 'failure': {
      // What turns the stored failure back into the error the workflow catches needs these two.
      if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
      const failure = value as Record<string, unknown>;
      return typeof failure.name === 'string' && typeof failure.message === 'string';
    }
  }
}

const FORM_NAMES: Readonly<Record<FieldForm, string>> = {
  string: 'a string',
  integer: 'an integer',
  time: 'a finite number of epoch milliseconds',
  failure: 'an error (an object with a string name and message)',
};

/** Why `value`, found as `key` of a `type` payload, is not what duraflow writes there. */
function misshapen(type: string, field: PayloadField, value: unknown): TypeError {
  // Only the kind: the value may be long, and is in the row for whoever repairs it.
  const found = value === undefined ? 'there is none' : `it is ${kindOf(value)}`;
  return new TypeError(`the ${type} payload's ${field.key} must be ${FORM_NAMES[field.form]}; ${found}`);
}

/**
 * The payload of a history row of type `type`, as the object duraflow wrote (`{}` for a row
 * without one). Throws, with what is wrong, for a payload it did not write: one that is not a
 * JSON object, or one without a field replay reads (see PAYLOAD_FIELDS), or with a field of
 * another form. Replay runs it for every row: a readable one costs the parse and a few checks.
 */
export function readHistoryPayload(type: string, text: string | null): Record<string, unknown> {
  const payload = text ? readJsonObject(text) : {};
  const fields = PAYLOAD_FIELDS.get(type);
  if (fields === undefined) return payload;
  for (let i = 0; i < fields.length; i++) {
    const field = fields[i]!;
    const value = payload[field.key];
    if (value === undefined && field.isOptional) continue;
    if (!hasForm(value, field.form)) throw misshapen(type, field, value);
  }
  return payload;
}
