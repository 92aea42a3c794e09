/**
 * Runs `close` and calls `abandon` if it has not finished within `timeoutMs`. Closing waits for
 * the database, which may not answer at all; `abandon` drops its connections so that every step
 * still waiting on it ends at once.
 */
export async function closeWithDeadline(timeoutMs: number, close: () => Promise<void>, abandon: () => void): Promise<void> {
  const deadline = setTimeout(abandon, timeoutMs);
  try {
    await close();
  } finally {
    clearTimeout(deadline);
  }
}
