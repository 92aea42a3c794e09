import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execute = promisify(execFile);
const cli = new URL('../../dist/bin/duraflow.js', import.meta.url).pathname;

/** How a run of the CLI ended. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

async function runWithoutDatabaseUrl(file: string, args: string[]): Promise<CliRun> {
  const env = { ...process.env };
  delete env.DATABASE_URL;
  return execute(file, args, { env }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: CliRun) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );
}

/**
 * Runs the compiled CLI without DATABASE_URL, so only its flags say where to read; resolves with
 * its exit code and output whether or not it succeeded.
 */
export async function runCli(args: string[]): Promise<CliRun> {
  return runWithoutDatabaseUrl(process.execPath, [cli, ...args]);
}

/**
 * Runs the CLI as `duraflow … | cat` in a shell, its exit code kept (pipefail): its stdout is then
 * an operating-system pipe, which takes a large output a pipe's worth at a time, where the socket
 * execFile gives a child takes it in one write.
 */
export async function runCliThroughPipe(args: string[]): Promise<CliRun> {
  return runWithoutDatabaseUrl('bash', ['-c', 'set -o pipefail; "$0" "$@" | cat', process.execPath, cli, ...args]);
}
