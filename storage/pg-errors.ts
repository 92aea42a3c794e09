/**
 * The only place that reads Postgres error codes. Everything above storage asks these questions
 * instead of matching codes or messages itself.
 */

/** SQLSTATE codes after which the same statement may succeed if simply tried again. */
export const RETRYABLE_PG_CODES: ReadonlySet<string> = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
  '08000', // connection_exception
  '08003', // connection_does_not_exist
  '08006', // connection_failure
  '08001', // sqlclient_unable_to_establish_sqlconnection
  '08004', // sqlserver_rejected_establishment_of_sqlconnection
]);

/** Node socket errors that mean the connection, not the statement, failed. */
const RETRYABLE_NODE_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'ECONNABORTED',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

function codeOf(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/** Whether `error` is transient: the database or the network, not the statement, is at fault. */
export function isRetryable(error: unknown): boolean {
  const code = codeOf(error);
  if (code !== undefined && (RETRYABLE_PG_CODES.has(code) || RETRYABLE_NODE_CODES.has(code))) {
    return true;
  }
  // pg reports a dropped socket with a plain Error and no code.
  const message = error instanceof Error ? error.message : '';
  return /Connection terminated|connection timeout|timeout exceeded when trying to connect|Query read timeout|Client has encountered a connection error/i.test(
    message,
  );
}

/** Whether `error` says a table, index or other object a statement creates exists already. */
export function isAlreadyThere(error: unknown): boolean {
  const code = codeOf(error);
  return code === '42P07' || code === '42710';
}

/**
 * Whether `error` is the failure a statement provokes on purpose to abort itself: a text cast to
 * int (SQLSTATE 22P02) of a message starting with `marker`.
 */
export function isRaisedBy(error: unknown, marker: string): boolean {
  return codeOf(error) === '22P02' && error instanceof Error && error.message.includes(marker);
}

/**
 * What a statement said when it aborted itself with `marker` (see `isRaisedBy`): the text after
 * the marker, without the cast's own wording around it; undefined for any other error.
 */
export function raisedReason(error: unknown, marker: string): string | undefined {
  if (!isRaisedBy(error, marker)) return undefined;
  const message = (error as Error).message;
  return message.slice(message.indexOf(marker) + marker.length).replace(/^: /, '').replace(/"$/, '');
}

/** Whether `error` is a statement giving up on a lock after `lock_timeout` (SQLSTATE 55P03). */
export function isLockTimeout(error: unknown): boolean {
  return codeOf(error) === '55P03';
}
