import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

/**
 * Timeout of a test that starts the embedded database in child processes, or in a data directory
 * more than once: each start costs PGlite seconds of CPU, several times that on a busy machine
 * (60 s, the default, ran out under a load of 15 on two cores).
 */
export const EMBEDDED_STARTS_TEST_MS = 180_000;

/** A node process running one of the compiled fixtures, with its stdout read line by line. */
export interface Child {
  process: ChildProcess;
  /** Resolves with the first stdout line matching `pattern`. */
  line(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Resolves when the process has exited. */
  exited: Promise<number | null>;
}

export function spawnFixture(file: string, env: Record<string, string>, args: string[] = []): Child {
  const child = spawn(process.execPath, [new URL(`../../dist/test/fixtures/${file}`, import.meta.url).pathname, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  createInterface({ input: child.stdout! }).on('line', (line) => {
    lines.push(line);
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (waiters[i]!.pattern.test(line)) waiters.splice(i, 1)[0]!.resolve(line);
    }
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    process: child,
    exited,
    line(pattern, timeoutMs = 30_000) {
      const seen = lines.find((l) => pattern.test(l));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`child printed no line matching ${pattern} (stderr: ${stderr.slice(-2000)})`)),
          timeoutMs,
        );
        void exited.then((code) =>
          reject(new Error(`child exited with ${code} before printing ${pattern} (stderr: ${stderr.slice(-2000)})`)),
        );
        waiters.push({
          pattern,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
      });
    },
  };
}
