import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execute = promisify(execFile);
const harness = new URL('../../dist/benchmarks/run.js', import.meta.url).pathname;

/** Runs the benchmark harness (on the embedded database unless args say otherwise); resolves with its exit code and output either way. */
export function bench(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return execute(process.execPath, [harness, ...args], { timeout: 120_000 }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (error: { code: number; stdout: string; stderr: string }) => error,
  );
}
