import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import type { CpuProfile, ProfileSummary } from '../../benchmarks/profile.js';
import { bench } from '../helpers/bench-harness.js';
import { EMBEDDED_STARTS_TEST_MS } from '../helpers/child-engine.js';
import { useTempDir } from '../helpers/temp-dir.js';

describe('the benchmark harness with --profile', () => {
  const dir = useTempDir('duraflow-profile-');

  it('writes the main thread profile of the measured run and sums it up in the report', async () => {
    const profileFile = join(dir.path, 'steps.cpuprofile');
    const reportFile = join(dir.path, 'steps.json');
    const run = await bench(['--scenario', 'steps', '--workflows', '100', '--steps', '3', '--warm-up', '100', '--profile', profileFile, '--json', reportFile]);
    expect(run.stderr.includes('Error') ? run.stderr : '').toBe('');
    expect(run.code).toBe(0);

    const profile = JSON.parse(await readFile(profileFile, 'utf8')) as CpuProfile;
    expect(profile.samples?.length).toBeGreaterThan(0);
    const report = JSON.parse(await readFile(reportFile, 'utf8')) as { profile: ProfileSummary & { file: string; run: number } };
    expect(report.profile.file).toBe(profileFile);
    expect(report.profile.sampledMs).toBeGreaterThan(0);
    // The engine's own code ran on the profiled thread (beside the embedded database's).
    expect(report.profile.files.some((f) => /^dist\/(actors|engine|storage)\//.test(f.file))).toBe(true);
    expect(run.stdout).toContain(`main thread, first run (${report.profile.sampledMs} ms sampled, ${profileFile}): garbage collector`);
  }, EMBEDDED_STARTS_TEST_MS);

  it('refuses --profile for the memory scenario and without a file, before running anything', async () => {
    const memory = await bench(['--scenario', 'memory', '--profile', join(dir.path, 'memory.cpuprofile')]);
    expect(memory.code).toBe(2);
    expect(memory.stderr).toContain('--profile profiles this process, and the memory scenario runs in child processes');
    const empty = await bench(['--scenario', 'steps', '--profile=']);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toContain('--profile needs a file to write');
  });
});
