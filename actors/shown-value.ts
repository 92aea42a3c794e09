/**
 * A bad value as an error message shows it: a number in a string ('10', from a form, an event's
 * payload or an environment variable, say) as the string it is, not as a number that would pass.
 * Shared by the checks inside workflows and those of the engine's API.
 */
export function shownValue(value: unknown): string {
  return typeof value === 'string' ? `the string ${JSON.stringify(value.slice(0, 60))}` : String(value);
}
