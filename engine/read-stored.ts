import { readJsonObject } from '../storage/stored-json.js';
import { type StoredField, UnreadableStateError } from './errors.js';

/**
 * Stored values of a workflow besides its history, read for `inspect` and `result()`: text that
 * duraflow did not write (a row changed by hand, say) becomes an UnreadableStateError naming the
 * workflow and the value, instead of JSON.parse's error. `of` names the activity or event the
 * value belongs to, if any.
 */
export function readStored(text: string | null | undefined, workflowId: string, field: StoredField, of?: string): unknown {
  if (text === null || text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new UnreadableStateError(workflowId, field, error, of);
  }
}

/** As `readStored`, for a value stored as a JSON object (variables, a failure). */
export function readStoredObject<T>(text: string, workflowId: string, field: StoredField, of?: string): T {
  try {
    return readJsonObject(text) as T;
  } catch (error) {
    throw new UnreadableStateError(workflowId, field, error, of);
  }
}
