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

/**
 * Runs the compiled CLI without DATABASE_URL, so only its flags say where to read; resolves with
 * its exit code and output whether or not it succeeded.
 */
export async function runCli(args: string[]): Promise<CliRun> {
  const env = { ...process.env };
  delete env.DATABASE_URL;
  return execute(process.execPath, [cli, ...args], { env }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: CliRun) => ({ code: error.code, stdout: error.stdout, stderr: error.stderr }),
  );
}
