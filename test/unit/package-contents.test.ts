import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import { beforeAll, describe, expect, it } from 'vitest';

const execute = promisify(execFile);
const REPO = fileURLToPath(new URL('../../', import.meta.url));

interface PackageJson {
  exports: Record<string, { types: string; default: string }>;
  bin: Record<string, string>;
}

/** The files `npm pack` would put in the tarball, as paths from the package root. */
async function packedFiles(): Promise<Set<string>> {
  const { stdout } = await execute('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: REPO });
  const [report] = JSON.parse(stdout) as [{ files: { path: string }[] }];
  return new Set(report.files.map((file) => file.path));
}

/** The relative modules and files a compiled module loads: static and dynamic imports, and new URL(…, import.meta.url). */
function relativeLoads(source: string): string[] {
  const patterns = [/\bfrom '(\.\.?\/[^']+)'/g, /\bimport\('(\.\.?\/[^']+)'\)/g, /new URL\('(\.\.?\/[^']+)', import\.meta\.url\)/g];
  return patterns.flatMap((pattern) => [...source.matchAll(pattern)].map((match) => match[1] as string));
}

describe('the packed package', () => {
  let files: Set<string>;
  const packageJson = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as PackageJson;

  beforeAll(async () => {
    files = await packedFiles();
  }, 60_000);

  it('holds the files its exports and bin name', () => {
    const named = [
      ...Object.values(packageJson.exports).flatMap((entry) => [entry.types, entry.default]),
      ...Object.values(packageJson.bin),
    ].map((file) => path.posix.normalize(file));
    expect(named.filter((file) => !files.has(file))).toEqual([]);
  });

  it('holds every migration and the Grafana dashboard the README points to', () => {
    const migrations = readdirSync(path.join(REPO, 'storage/migrations')).map((name) => `dist/storage/migrations/${name}`);
    expect(migrations.length).toBeGreaterThan(0);
    const wanted = [...migrations, 'metrics/grafana-dashboard.json', 'README.md'];
    expect(wanted.filter((file) => !files.has(file))).toEqual([]);
  });

  it('holds every file its shipped modules load', () => {
    const missing: string[] = [];
    for (const file of files) {
      if (!/\.(c|m)?js$/.test(file)) continue;
      for (const target of relativeLoads(readFileSync(path.join(REPO, file), 'utf8'))) {
        const resolved = path.posix.join(path.posix.dirname(file), target);
        const folder = resolved.endsWith('/') ? resolved : `${resolved}/`;
        const isPacked = files.has(resolved) || [...files].some((packed) => packed.startsWith(folder));
        if (!isPacked) missing.push(`${file} loads ${resolved}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('holds, for every source map it ships, the sources the map names or their text inside it', () => {
    const unresolved: string[] = [];
    for (const file of files) {
      if (!file.endsWith('.map')) continue;
      const map = JSON.parse(readFileSync(path.join(REPO, file), 'utf8')) as { sources: string[]; sourcesContent?: (string | null)[] };
      map.sources.forEach((source, i) => {
        const resolved = path.posix.join(path.posix.dirname(file), source);
        if (!files.has(resolved) && typeof map.sourcesContent?.[i] !== 'string') unresolved.push(`${file} names ${resolved}`);
      });
    }
    expect(unresolved).toEqual([]);
  });

  it('leaves out the compiled tests and benchmarks, which need the development dependencies', () => {
    const devOnly = [...files].filter((file) => file.startsWith('dist/test/') || file.startsWith('dist/benchmarks/'));
    expect(devOnly).toEqual([]);
  });
});
