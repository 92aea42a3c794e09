import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const PUBLIC_ENTRY = path.join(REPO, 'dist/engine/index.js');

// An application's own options are often read from its environment or configuration, where an
// absent one is undefined; the options accept undefined as absent at run time.
const CONSUMER = `
import { createClient, createEngine, DEFAULT_RETRY_POLICY, type WorkflowContext } from ${JSON.stringify(PUBLIC_ENTRY)};

declare const env: Record<string, string | undefined>;
const port = env.PORT === undefined ? undefined : Number(env.PORT);
const maybeNumber = port;

export async function order(ctx: WorkflowContext, input: { id: string }) {
  const { pay } = ctx.activities<{ pay: (input: string) => Promise<number> }>({
    retry: { maxAttempts: maybeNumber, initialIntervalMs: maybeNumber, backoffCoefficient: maybeNumber,
      maxIntervalMs: maybeNumber, nonRetryable: undefined },
    startToCloseTimeoutMs: maybeNumber,
  });
  await ctx.waitForEvent('go', { timeoutMs: maybeNumber });
  return pay(input.id);
}

const engine = await createEngine({
  database: env.DATABASE_URL, dataDir: env.DATA_DIR, schema: env.SCHEMA, maxConnections: maybeNumber,
  logger: undefined, maxPayloadBytes: maybeNumber, databaseRetryMs: maybeNumber,
  workflows: { order }, activities: env.ACTIVITIES, inlineActivities: undefined,
  activityThreads: maybeNumber, activityConcurrency: maybeNumber, activityMaxHeapMb: maybeNumber,
  retry: undefined, maxCachedWorkflows: maybeNumber, pollIntervalMs: maybeNumber,
  walHighWaterEvents: maybeNumber, metrics: { port, host: env.HOST }, leaseTtlMs: maybeNumber,
  closeTimeoutMs: maybeNumber,
});
const handle = await engine.startWorkflow(order, { id: 'a' }, { workflowId: env.ID, version: env.VERSION, startAt: maybeNumber });
await engine.sendEvent(handle.workflowId, 'go', undefined, { eventId: env.EVENT_ID });
const paid: number = await handle.result({ timeoutMs: maybeNumber });
const client = await createClient({ database: env.DATABASE_URL, migrate: undefined, closeTimeoutMs: maybeNumber });
await client.result(handle.workflowId, { timeoutMs: maybeNumber });
const defaultAttempts: number = DEFAULT_RETRY_POLICY.maxAttempts;
export { defaultAttempts, paid };
`;

const workDir = mkdtempSync(path.join(os.tmpdir(), 'duraflow-public-types-'));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

function diagnosticsOf(source: string, options: ts.CompilerOptions): string[] {
  const file = path.join(workDir, 'consumer.mts');
  writeFileSync(file, source);
  const program = ts.createProgram([file], {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    // PGlite's own declarations need the DOM library and @types/emscripten.
    skipLibCheck: true,
    types: ['node'],
    typeRoots: [path.join(REPO, 'node_modules/@types')],
    ...options,
  });
  return ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
}

const STARTS_WITHOUT_INPUT = `
import { createEngine, type WorkflowContext } from ${JSON.stringify(PUBLIC_ENTRY)};

async function nightly(ctx: WorkflowContext) { await ctx.sleep(1); return 1; }
async function report(_ctx: WorkflowContext, input?: { day: string }) { return input?.day ?? 'today'; }
async function charge(_ctx: WorkflowContext, input: { amount: number }) { return input.amount; }

const engine = await createEngine({ workflows: { nightly, report, charge } });
const count: number = await (await engine.startWorkflow(nightly)).result();
const day: string = await (await engine.startWorkflow(report)).result();
const sameDay: string = await (await engine.startWorkflow(report, undefined, { workflowId: 'r' })).result();
const amount: number = await (await engine.startWorkflow(charge, { amount: 3 }, { workflowId: 'c' })).result();
export { amount, count, day, sameDay };
`;

describe('the published declarations', () => {
  it('take undefined for every optional option under exactOptionalPropertyTypes', () => {
    expect(diagnosticsOf(CONSUMER, { exactOptionalPropertyTypes: true })).toEqual([]);
  }, 60_000);

  it('let engine.startWorkflow leave out the input of a workflow that takes none or an optional one', () => {
    expect(diagnosticsOf(STARTS_WITHOUT_INPUT, {})).toEqual([]);
  }, 60_000);

  it('still ask engine.startWorkflow for the input a workflow requires', () => {
    const missing = STARTS_WITHOUT_INPUT.replace('startWorkflow(charge, { amount: 3 }, {', 'startWorkflow(charge, undefined, {');
    const diagnostics = diagnosticsOf(missing, {});
    expect(diagnostics).toHaveLength(1);
    expect(diagnostics[0]).toMatch(/undefined/);
  }, 60_000);

  it('still refuse an option of the wrong type under exactOptionalPropertyTypes', () => {
    const wrong = `import { createEngine } from ${JSON.stringify(PUBLIC_ENTRY)};\nawait createEngine({ workflows: {}, schema: 42 });\n`;
    const diagnostics = diagnosticsOf(wrong, { exactOptionalPropertyTypes: true });
    expect(diagnostics).toHaveLength(1);
    expect(diagnostics[0]).toMatch(/Type 'number' is not assignable to type 'string/);
  }, 60_000);
});
