/**
 * Hostile input through the public API, on every backend: arbitrary strings (empty, huge, NUL,
 * lone surrogates, SQL, emoji, whitespace, prototype keys) as workflow ids, versions, workflow
 * names, event names and variable names; arbitrary values (deep, cyclic, BigInt, functions,
 * symbols, undefined, huge, exactly at the size limit) as workflow inputs, results, event
 * payloads, variables and activity results.
 *
 * Every call either succeeds, and then what comes back (result, inspect, what the workflow code
 * received) is the value under JSON semantics, or fails with a typed duraflow error that names
 * the problem, and then nothing stored changed. After each property a plain workflow still runs
 * on the same engine. Options (schema, metrics, workflow names) are checked the same way, with
 * TypeError/RangeError before any database is touched.
 */
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import {
  type Client,
  createClient,
  createEngine,
  type Engine,
  InvalidArgumentError,
  PayloadTooLargeError,
  UnknownWorkflowError,
  WorkflowAlreadyExistsError,
  WorkflowClosedError,
  type WorkflowContext,
  WorkflowFailedError,
  type WorkflowState,
} from 'duraflow';

import { backends, type TestSchema } from '../helpers/database.js';
import { quietLogger, startEngine } from '../helpers/engines.js';
import { waitFor } from '../helpers/wait-for.js';

/** maxPayloadBytes of the engines in the properties: small, so that going over it is cheap. */
const LIMIT = 64 * 1024;
const DEFAULT_LIMIT = 1024 * 1024;
/** README: ids and names are 1..256 UTF-16 units, no NUL, no lone surrogate. */
const MAX_NAME = 256;
const TABLES = ['workflows', 'history', 'timers', 'activity_tasks', 'inbox'];
/** An address nothing listens on: a call that reached the database would fail differently. */
const UNREACHABLE = 'postgres://duraflow@127.0.0.1:1/none';

function isValidName(s: string): boolean {
  return s.length >= 1 && s.length <= MAX_NAME && !s.includes('\0') && s.isWellFormed();
}

/** Empty or over-long: refused by every rule in the README, whatever else the string holds. */
function isEmptyOrOverLong(s: string): boolean {
  return s.length === 0 || s.length > MAX_NAME;
}

function show(s: string): string {
  const head = JSON.stringify(s.slice(0, 40));
  return s.length > 40 ? `${head}… (${s.length} units)` : head;
}

/** A generated string that prints short (some are 10 MB). */
class Str {
  constructor(readonly value: string) {}
  [fc.toStringMethod](): string {
    return show(this.value);
  }
}

// --- strings ---

/** Any UTF-16 unit, lone surrogates and NUL included. */
const utf16Unit = fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c));

const SQL = [
  "'); DROP TABLE workflows; --",
  '"; DROP SCHEMA public CASCADE; --',
  "' OR '1'='1",
  "x'); DELETE FROM history; SELECT ('",
  '$1',
  '$$;$$',
  '%s%n%x',
  '\\',
  "\\'",
  'E\'\\x00\'',
  '/* */ --',
];

const NASTY = [
  '',
  ' ',
  '   ',
  '\t',
  '\n',
  '\r\n',
  '\u00a0',
  '\u200b',
  '\u2028\u2029',
  'a\ufeff',
  '\uffff',
  '\0',
  'a\0',
  '\0\0\0',
  '\ud800',
  '\udfff',
  'a\ud800b',
  '\udc00\ud800',
  '😀',
  '👩‍👩‍👧‍👦',
  'e\u0301',
  '𝕏',
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  'null',
  'undefined',
  'NaN',
  '${x}',
  '{{x}}',
  '<script>',
  ...SQL,
  'x'.repeat(MAX_NAME),
  'x'.repeat(MAX_NAME + 1),
  '😀'.repeat(MAX_NAME / 2),
  '😀'.repeat(MAX_NAME / 2 + 1),
  'é'.repeat(MAX_NAME),
  `${'x'.repeat(MAX_NAME - 1)}\ud800`,
];

/** Built once: ids and names of up to 10 MB. */
const HUGE = ['x'.repeat(65_537), '😀'.repeat(500_000), '\0'.repeat(1_000_000), 'z'.repeat(10_000_000)];

const hostileString: fc.Arbitrary<Str> = fc
  .oneof(
    { weight: 4, arbitrary: fc.constantFrom(...NASTY) },
    { weight: 2, arbitrary: fc.string({ unit: utf16Unit, maxLength: 12 }) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 12 }) },
    { weight: 1, arbitrary: fc.string({ unit: 'grapheme', maxLength: 8 }) },
    { weight: 1, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: MAX_NAME - 4, maxLength: MAX_NAME + 4 }) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...SQL), fc.string({ maxLength: 6 })).map(([a, b]) => a + b) },
    { weight: 1, arbitrary: fc.constantFrom(...HUGE) },
  )
  .map((s) => new Str(s));

/** Strings the README accepts as names (1..256 units, no NUL, no lone surrogate). */
const validName: fc.Arbitrary<Str> = hostileString.filter((s) => isValidName(s.value));

/** Strings every rule refuses as a name: empty, over-long, with NUL, with a lone surrogate. */
const invalidName: fc.Arbitrary<Str> = fc
  .oneof(
    fc.constant(''),
    fc.constantFrom(...HUGE),
    fc.string({ unit: 'grapheme-ascii', minLength: MAX_NAME + 1, maxLength: MAX_NAME + 20 }),
    fc.tuple(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 })).map(([a, b]) => `${a}\0${b}`),
    fc
      .tuple(fc.string({ maxLength: 5 }), fc.integer({ min: 0xd800, max: 0xdfff }), fc.string({ maxLength: 5 }))
      .map(([a, c, b]) => `${a.replace(/[\ud800-\udfff]/g, '')}${String.fromCharCode(c)}${b.replace(/[\ud800-\udfff]/g, '')}`)
      .filter((s) => !s.isWellFormed()),
  )
  .map((s) => new Str(s));

// --- values ---

/** What the engine must do with a value: keep its JSON form, or refuse it (either way for `deep`). */
type Expectation =
  | { kind: 'ok'; json: string | undefined }
  | { kind: 'invalid' }
  | { kind: 'tooLarge' }
  | { kind: 'deep'; json: string; bytes: number };

class Payload {
  constructor(
    readonly label: string,
    readonly value: unknown,
    readonly expect: Expectation,
  ) {}
  [fc.toStringMethod](): string {
    return `${this.label} (${this.expect.kind})`;
  }
}

function jsonOf(value: unknown): Payload {
  const json = JSON.stringify(value) as string | undefined;
  const label = json === undefined ? 'undefined' : json.length > 60 ? `${json.slice(0, 60)}… (${json.length} chars)` : json;
  return new Payload(label, value, { kind: 'ok', json });
}

/** Values JSON accepts with a twist (dropped, converted, nulled): they must round-trip as JSON does. */
function surprisingButJson(): Payload[] {
  const shared = { k: 1 };
  const withSymbolKey = { a: 1, [Symbol('k')]: 2 };
  const nullProto = Object.assign(Object.create(null) as object, { a: 1 });
  const inherited = Object.assign(Object.create({ inherited: 1 }) as object, { own: 2 });
  const sparse = [1, , 3];
  return [
    undefined,
    null,
    { a: undefined, b: 1 },
    [undefined, 1],
    new Date(0),
    { toJSON: () => ({ converted: true }) },
    { toJSON: () => undefined },
    sparse,
    NaN,
    -Infinity,
    -0,
    { n: NaN, i: Infinity, z: -0 },
    Buffer.from([1, 2]),
    /re/g,
    new Error('an error object'),
    new Number(3),
    new String('boxed'),
    new Boolean(false),
    nullProto,
    inherited,
    withSymbolKey,
    [shared, shared],
    Object.defineProperty({ '': '', constructor: 'c' }, '__proto__', { value: { own: true }, enumerable: true }),
    JSON.parse('{"__proto__": {"polluted": true}}') as unknown,
    '\0',
    '\ud800',
    'a\udc00b',
    '😀👩‍👩‍👧‍👦',
    "'); DROP TABLE workflows; --",
    { "'); DROP TABLE history; --": 1 },
    Number.MAX_SAFE_INTEGER + 2,
    5e-324,
    1.7976931348623157e308,
  ].map(jsonOf);
}

const POISONS: [string, () => unknown][] = [
  ['bigint', () => 10n],
  ['function', () => () => 1],
  ['class', () => class Secret {}],
  ['symbol', () => Symbol('s')],
  [
    'cyclic object',
    () => {
      const o: Record<string, unknown> = { a: 1 };
      o.self = o;
      return o;
    },
  ],
  [
    'cyclic array',
    () => {
      const a: unknown[] = [1];
      a.push([a]);
      return a;
    },
  ],
  // JSON would keep these as objects without their contents.
  ['Map', () => new Map([[1, 2]])],
  ['Set', () => new Set([1])],
  ['typed array', () => new Uint8Array([1, 2])],
  ['ArrayBuffer', () => new ArrayBuffer(2)],
  ['toJSON returning a BigInt', () => ({ toJSON: () => 1n })],
  [
    'toJSON that throws',
    () => ({
      toJSON(): never {
        throw new Error('toJSON refuses');
      },
    }),
  ],
  [
    'getter that throws',
    () => ({
      get boom(): never {
        throw new Error('getter refuses');
      },
    }),
  ],
  [
    'proxy whose ownKeys throws',
    () =>
      new Proxy(
        {},
        {
          ownKeys(): never {
            throw new Error('proxy refuses');
          },
        },
      ),
  ],
];

/** A poison (not JSON) somewhere inside otherwise plain JSON. */
const poisoned: fc.Arbitrary<Payload> = fc
  .tuple(
    fc.constantFrom(...POISONS),
    fc.array(fc.tuple(fc.boolean(), fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 1 })), { maxLength: 4 }),
  )
  .map(([[name, make], path]) => {
    let value = make();
    for (const [isArray, key, sibling] of path) {
      value = isArray ? [sibling, value] : { [`s${key}`]: sibling, [key]: value };
    }
    return new Payload(`${name} at depth ${path.length}`, value, { kind: 'invalid' });
  });

/** Bytes of one character in JSON (escapes included). */
const CHARS: [string, number][] = [
  ['x', 1],
  ['é', 2],
  ['€', 3],
  ['😀', 4],
  ['"', 2],
  ['\0', 6],
  ['\ud800', 6],
  ['\n', 2],
];

/** A string whose JSON is exactly `bytes` bytes: `char` repeated, padded with ASCII. */
function stringOfJsonBytes(char: string, charBytes: number, bytes: number): string {
  const n = Math.floor((bytes - 2) / charBytes);
  return char.repeat(n) + 'p'.repeat(bytes - 2 - n * charBytes);
}

/** Strings around the limit: accepted up to exactly LIMIT bytes of JSON, refused from LIMIT + 1. */
const boundary: fc.Arbitrary<Payload> = fc
  .tuple(fc.constantFrom(...CHARS), fc.integer({ min: -3, max: 3 }))
  .map(([[char, charBytes], offset]) => {
    const s = stringOfJsonBytes(char, charBytes, LIMIT + offset);
    const label = `string of ${JSON.stringify(char)} with JSON of LIMIT${offset >= 0 ? '+' : ''}${offset} bytes`;
    return new Payload(label, s, offset <= 0 ? { kind: 'ok', json: JSON.stringify(s) } : { kind: 'tooLarge' });
  });

const tooLarge: fc.Arbitrary<Payload> = fc.constantFrom(
  ...([
    ['10 MB string', () => 'x'.repeat(10_000_000)],
    ['array of a million zeros', () => new Array<number>(1_000_000).fill(0)],
    ['array of LIMIT nulls', () => new Array<null>(LIMIT).fill(null)],
    ['object of 20000 keys', () => Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [`key${i}`, i]))],
    ['nested strings over the limit', () => ({ a: ['x'.repeat(LIMIT / 2)], b: { c: 'y'.repeat(LIMIT / 2) } })],
  ] as const).map(([label, make]) => new Payload(label, make(), { kind: 'tooLarge' })),
);

function nestedArrays(depth: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

/** Deep nesting: must round-trip, or be refused with a typed error (JSON has no depth limit, V8 does). */
function deepPayload(depth: number): Payload {
  const json = `${'['.repeat(depth)}1${']'.repeat(depth)}`;
  return new Payload(`${depth} nested arrays`, nestedArrays(depth), { kind: 'deep', json, bytes: json.length });
}

const deep: fc.Arbitrary<Payload> = fc.oneof(fc.integer({ min: 100, max: 20_000 }), fc.constantFrom(100_000, 1_000_000)).map(deepPayload);

const hostilePayload: fc.Arbitrary<Payload> = fc.oneof(
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 4 }).map(jsonOf) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3, stringUnit: utf16Unit }).map(jsonOf) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3, stringUnit: 'binary' }).map(jsonOf) },
  {
    weight: 1,
    arbitrary: fc
      .dictionary(fc.string({ maxLength: 6 }), fc.option(fc.jsonValue({ maxDepth: 2 }), { nil: undefined }))
      .map(jsonOf),
  },
  { weight: 2, arbitrary: fc.constantFrom(...surprisingButJson()) },
  { weight: 3, arbitrary: poisoned },
  { weight: 2, arbitrary: boundary },
  { weight: 1, arbitrary: tooLarge },
  { weight: 1, arbitrary: deep },
);

/** Cases every name property tries first (then random ones). */
const NAME_EXAMPLES: [Str][] = [
  '',
  ' ',
  '\0',
  'a\0b',
  '\ud800',
  '__proto__',
  'constructor',
  "'); DROP TABLE workflows; --",
  '👩‍👩‍👧‍👦',
  '😀'.repeat(MAX_NAME / 2),
  'x'.repeat(MAX_NAME + 1),
  HUGE[3]!,
].map((s) => [new Str(s)]);

const INVALID_NAME_EXAMPLES: [Str][] = ['', 'x'.repeat(MAX_NAME + 1), HUGE[3]!, 'a\0b', 'a\ud800'].map((s) => [new Str(s)]);

function poisonAt(name: string, depth: number): Payload {
  const make = POISONS.find(([n]) => n === name)![1];
  let value = make();
  for (let i = 0; i < depth; i++) value = i % 2 === 0 ? { ok: 1, [`k${i}`]: value } : ['ok', value];
  return new Payload(`${name} at depth ${depth}`, value, { kind: 'invalid' });
}

function boundaryAt(char: string, charBytes: number, offset: number): Payload {
  const s = stringOfJsonBytes(char, charBytes, LIMIT + offset);
  const label = `string of ${JSON.stringify(char)} with JSON of LIMIT${offset >= 0 ? '+' : ''}${offset} bytes`;
  return new Payload(label, s, offset <= 0 ? { kind: 'ok', json: JSON.stringify(s) } : { kind: 'tooLarge' });
}

/** Cases every payload property tries first (then random ones). */
const PAYLOAD_EXAMPLES: [Payload][] = [
  jsonOf(undefined),
  jsonOf({ a: undefined, b: [undefined, 1] }),
  jsonOf({ toJSON: () => undefined }),
  jsonOf(JSON.parse('{"__proto__": {"polluted": true}}')),
  poisonAt('function', 0),
  poisonAt('function', 2),
  poisonAt('symbol', 0),
  poisonAt('symbol', 1),
  poisonAt('bigint', 1),
  poisonAt('cyclic object', 0),
  poisonAt('getter that throws', 1),
  boundaryAt('€', 3, 0),
  boundaryAt('😀', 4, 1),
  new Payload('10 MB string', HUGE[3], { kind: 'tooLarge' }),
  deepPayload(15_000),
  deepPayload(1_000_000),
].map((p) => [p]);

// --- what the tests observe ---

/** An error as workflow code reports it back (plain JSON). */
interface Caught {
  name: string;
  code?: string;
  message: string;
  attempts?: number;
  cause?: { name: string; code?: string; message: string };
}

function caught(error: unknown): Caught {
  const e = error as { name?: unknown; code?: unknown; message?: unknown; attempts?: unknown; cause?: Record<string, unknown> };
  return {
    name: String(e?.name),
    message: String(e?.message).slice(0, 2_000),
    ...(typeof e?.code === 'string' ? { code: e.code } : {}),
    ...(typeof e?.attempts === 'number' ? { attempts: e.attempts } : {}),
    ...(e?.cause
      ? {
          cause: {
            name: String(e.cause.name),
            message: String(e.cause.message).slice(0, 2_000),
            ...(typeof e.cause.code === 'string' ? { code: e.cause.code } : {}),
          },
        }
      : {}),
  };
}

function truncate(s: string | undefined): string {
  if (s === undefined) return 'undefined';
  return s.length > 200 ? `${s.slice(0, 200)}… (${s.length} chars)` : s;
}

/** `actual`'s JSON must be `json` (undefined for no value), character for character. */
function expectJson(actual: unknown, json: string | undefined, what: string): void {
  const got = JSON.stringify(actual) as string | undefined;
  if (got !== json) throw new Error(`${what}: got ${truncate(got)}, expected ${truncate(json)}`);
}

/** The typed refusal `expectation` calls for, naming `what`. */
function expectRefusal(error: unknown, expectation: Expectation, what: RegExp, where: string): void {
  const types =
    expectation.kind === 'invalid'
      ? ['InvalidArgumentError']
      : expectation.kind === 'tooLarge'
        ? ['PayloadTooLargeError']
        : ['InvalidArgumentError', 'PayloadTooLargeError'];
  const e = error as { name?: string; code?: string; message?: string };
  expect(e?.name, `${where}: ${String(e?.message).slice(0, 300)}`).toBeOneOf(types);
  expect(e.code, where).toMatch(/^DURAFLOW_/);
  expect(e.message, where).toMatch(what);
  expect(e.message!.length, `${where}: message length`).toBeLessThan(2_000);
}

/**
 * Runs `call`. A refusal is `isAtOnce` when it came before the event loop turned: before any
 * answer from a Postgres server could have come, as "refused at once" means (a time limit would
 * measure the machine's load instead). The embedded database answers without a turn, so there
 * only the snapshots show that nothing was touched.
 */
async function settle(call: () => Promise<unknown>): Promise<{ ok: true; value: unknown } | { ok: false; error: unknown; isAtOnce: boolean }> {
  let hasTurned = false;
  const turn = setImmediate(() => (hasTurned = true));
  try {
    return { ok: true, value: await call() };
  } catch (error) {
    return { ok: false, error, isAtOnce: !hasTurned };
  } finally {
    clearImmediate(turn);
  }
}

// --- workflows ---

/** Per workflow id: what the workflow should use (names and values too large to be an input). */
const stash = new Map<string, unknown>();
/** Per workflow id: what the workflow code received. */
const received = new Map<string, unknown>();

async function echoInput(_ctx: WorkflowContext, input: unknown): Promise<unknown> {
  return input;
}

async function returnsStashed(ctx: WorkflowContext): Promise<unknown> {
  return stash.get(ctx.info.workflowId);
}

async function waitsForStashedName(ctx: WorkflowContext): Promise<unknown> {
  try {
    received.set(ctx.info.workflowId, await ctx.waitForEvent(stash.get(ctx.info.workflowId) as string));
    return 'received';
  } catch (error) {
    return { error: caught(error) };
  }
}

async function setsStashedVar(ctx: WorkflowContext): Promise<unknown> {
  const [name, value] = stash.get(ctx.info.workflowId) as [string, unknown];
  try {
    ctx.setVar(name, value);
  } catch (error) {
    return { error: caught(error) };
  }
  await ctx.waitForEvent('finish');
  return 'set';
}

async function callsProduce(ctx: WorkflowContext): Promise<unknown> {
  const { produce } = ctx.activities<{ produce(key: string): Promise<unknown> }>({
    retry: { maxAttempts: 3, initialIntervalMs: 1 },
  });
  try {
    received.set(ctx.info.workflowId, await produce(ctx.info.workflowId));
    return 'received';
  } catch (error) {
    return { error: caught(error) };
  }
}

async function sleepsThenWakes(ctx: WorkflowContext, ms: number): Promise<string> {
  await ctx.sleep(ms);
  return 'woke';
}

/** Inline (engine-thread) activity returning whatever the test stashed for the workflow. */
const inlineActivities = { produce: (key: string): unknown => stash.get(key) };

const workflows = { echoInput, returnsStashed, waitsForStashedName, setsStashedVar, callsProduce, sleepsThenWakes };

describe.each(backends)('hostile input on $name', (backend) => {
  let db: TestSchema;
  let counter = 0;
  const nextId = (prefix: string): string => `${prefix}-${++counter}`;

  beforeEach(async () => {
    db = await backend.schema();
  });
  afterEach(async () => {
    stash.clear();
    received.clear();
    await db.drop();
  });

  /** Every row of every table, to show a refused call changed nothing. */
  async function snapshot(): Promise<string> {
    const parts: unknown[] = [];
    for (const table of TABLES) parts.push(await db.query(`SELECT * FROM "${db.schema}".${table} ORDER BY 1, 2`));
    return JSON.stringify(parts);
  }

  async function open(): Promise<{ engine: Engine; client: Client }> {
    const engine = await startEngine(db, { workflows, inlineActivities, maxPayloadBytes: LIMIT });
    try {
      // The client gets the engine's limit too (each process checks what it writes).
      const client = await createClient({ database: db.database, schema: db.schema, logger: quietLogger, maxPayloadBytes: LIMIT });
      return { engine, client };
    } catch (error) {
      await engine.close();
      throw error;
    }
  }

  async function expectHealthy(engine: Engine): Promise<void> {
    const handle = await engine.startWorkflow(echoInput, { still: 'fine' });
    expect(await handle.result()).toEqual({ still: 'fine' });
  }

  /** Waits until the workflow's state in the database satisfies `check`. */
  function committed(client: Client, id: string, what: string, check: (s: WorkflowState) => boolean): Promise<WorkflowState> {
    return waitFor(async () => {
      const s = await client.inspect(id);
      return check(s) && s;
    }, `${id}: ${what}`);
  }

  const isWaiting = (s: WorkflowState): boolean => s.history.some((e) => e.type === 'EventWaitStarted');
  const hasEnded = (s: WorkflowState): boolean => s.status === 'completed' || s.status === 'failed';

  /** Each call must be refused at once with InvalidArgumentError naming `what`; nothing stored changes. */
  async function expectAllRefused(calls: [string, () => Promise<unknown>][], what: RegExp, input: Str): Promise<void> {
    const before = await snapshot();
    for (const [where, call] of calls) {
      const outcome = await settle(call);
      const at = `${where} with ${show(input.value)}`;
      if (outcome.ok) throw new Error(`${at}: accepted`);
      expect(outcome.error, at).toBeInstanceOf(InvalidArgumentError);
      expectRefusal(outcome.error, { kind: 'invalid' }, what, at);
      expect(outcome.isAtOnce, `${at}: refused only after the event loop turned`).toBe(true);
    }
    expect(await snapshot()).toBe(before);
  }

  it('workflow ids and versions: accepted and round-tripped, or refused at once with InvalidArgumentError, storing nothing', async () => {
    const { engine, client } = await open();
    const used = new Set<string>();
    try {
      await fc.assert(
        fc.asyncProperty(hostileString, async (s) => {
          const id = s.value;
          if (!isValidName(id)) {
            await expectAllRefused(
              [
                ['engine.startWorkflow', () => engine.startWorkflow(echoInput, 1, { workflowId: id })],
                ['client.startWorkflow', () => client.startWorkflow('echoInput', 1, { workflowId: id })],
                ['engine.inspect', () => engine.inspect(id)],
                ['client.inspect', () => client.inspect(id)],
                ['engine.result', () => engine.result(id)],
                ['client.result', () => client.result(id)],
                ['engine.sendEvent', () => engine.sendEvent(id, 'e', 1)],
                ['client.sendEvent', () => client.sendEvent(id, 'e', 1)],
              ],
              /workflowId/,
              s,
            );
            await expectAllRefused(
              [
                ['engine.startWorkflow version', () => engine.startWorkflow(echoInput, 1, { workflowId: nextId('v'), version: id })],
                ['client.startWorkflow version', () => client.startWorkflow('echoInput', 1, { workflowId: nextId('v'), version: id })],
              ],
              /version/,
              s,
            );
            return;
          }
          if (used.has(id)) {
            const before = await snapshot();
            await expect(engine.startWorkflow(echoInput, 2, { workflowId: id })).rejects.toBeInstanceOf(WorkflowAlreadyExistsError);
            await expect(client.startWorkflow('echoInput', 2, { workflowId: id })).rejects.toBeInstanceOf(WorkflowAlreadyExistsError);
            expect(await snapshot()).toBe(before);
            return;
          }
          used.add(id);
          const input = { id, n: used.size };
          const handle =
            used.size % 2 === 0
              ? await client.startWorkflow('echoInput', input, { workflowId: id, version: id })
              : await engine.startWorkflow(echoInput, input, { workflowId: id, version: id });
          expect(handle.workflowId).toBe(id);
          expect(await handle.result()).toEqual(input);
          expect(await engine.result(id)).toEqual(input);
          for (const state of [await engine.inspect(id), await client.inspect(id)]) {
            expect(state).toMatchObject({ workflowId: id, version: id, workflowName: 'echoInput', status: 'completed', input, result: input });
          }
          await expect(engine.sendEvent(id, 'late', 1)).rejects.toBeInstanceOf(WorkflowClosedError);
          await expect(client.sendEvent(id, 'late', 1)).rejects.toBeInstanceOf(WorkflowClosedError);
        }),
        { numRuns: 40, endOnFailure: true, examples: NAME_EXAMPLES },
      );
      await expectHealthy(engine);
    } finally {
      await client.close();
      await engine.close();
    }
    // Up to forty workflows run to their end, each read back six ways: 7-25 s on the embedded
    // database, over a minute on a loaded machine.
  }, 150_000);

  it('workflow names: a client stores any valid name as given (pending), the engine refuses unknown ones, invalid ones are refused at once', async () => {
    const { engine, client } = await open();
    try {
      await fc.assert(
        fc.asyncProperty(hostileString, async (s) => {
          const name = s.value;
          if (!isValidName(name)) {
            await expectAllRefused(
              [
                ['engine.startWorkflow', () => engine.startWorkflow(name, 1)],
                ['client.startWorkflow', () => client.startWorkflow(name, 1)],
              ],
              /workflow name/,
              s,
            );
            return;
          }
          if (Object.hasOwn(workflows, name)) return;
          const before = await snapshot();
          const refused = await settle(() => engine.startWorkflow(name, 1));
          if (refused.ok) throw new Error(`engine.startWorkflow(${show(name)}): accepted an unregistered name`);
          expect(refused.error).toBeInstanceOf(UnknownWorkflowError);
          expect((refused.error as UnknownWorkflowError).workflowName).toBe(name);
          expect(await snapshot()).toBe(before);
          const id = nextId('name');
          const input = { name };
          await client.startWorkflow(name, input, { workflowId: id });
          for (const state of [await engine.inspect(id), await client.inspect(id)]) {
            expect(state).toMatchObject({ workflowId: id, workflowName: name, status: 'pending', input });
            expect(state.pendingReason).toContain('waiting for an engine');
          }
        }),
        { numRuns: 40, endOnFailure: true, examples: NAME_EXAMPLES },
      );
      await expectHealthy(engine);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it.each([
    { option: 'workflows', names: (name: string) => ({ workflows: { [name]: echoInput } }) },
    // No call could reach such an activity: ctx.activities refuses the name with InvalidArgumentError.
    { option: 'inlineActivities', names: (name: string) => ({ workflows: { echoInput }, inlineActivities: { [name]: async () => 1 } }) },
  ])('names in options.$option: an empty, over-long, NUL, lone-surrogate or U+FEFF-led name is a RangeError, before the database', async ({ option, names }) => {
    // Other test files create and drop schemas meanwhile: look at this test's own (its name, or
    // any name made from it) only.
    const ownSchema = async (): Promise<unknown[]> =>
      db.query(`SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)`, [db.schema]);
    expect(await ownSchema()).toEqual([]);
    const bad = { empty: '', 'over-long': 'a'.repeat(MAX_NAME + 1), NUL: 'a\0b', 'lone surrogate': 'a\ud800', 'leading U+FEFF': '\ufeffa' };
    const outcomes: Record<string, string> = {};
    for (const [label, name] of Object.entries(bad)) {
      const outcome = await settle(() => createEngine({ database: db.database, schema: db.schema, logger: quietLogger, ...names(name) }));
      if (outcome.ok) {
        await (outcome.value as Engine).close();
        outcomes[label] = 'accepted';
      } else {
        const e = outcome.error as Error;
        outcomes[label] = e.message.startsWith(`options.${option}:`) ? `${e.name} naming options.${option}` : `${e.name}: ${e.message.slice(0, 100)}`;
      }
    }
    const refused = `RangeError naming options.${option}`;
    expect(outcomes).toEqual(Object.fromEntries(Object.keys(bad).map((label) => [label, refused])));
    // Refused before the database: the test's schema was not even created.
    expect(await ownSchema()).toEqual([]);
  });

  it('event names: delivered under exactly that name, or refused at once with InvalidArgumentError, storing nothing', async () => {
    const { engine, client } = await open();
    try {
      const target = nextId('target');
      stash.set(target, 'never');
      await engine.startWorkflow(waitsForStashedName, undefined, { workflowId: target });
      await committed(client, target, 'waiting', isWaiting);
      await fc.assert(
        fc.asyncProperty(hostileString, fc.boolean(), async (s, viaClient) => {
          const name = s.value;
          if (!isValidName(name)) {
            await expectAllRefused(
              [
                ['engine.sendEvent', () => engine.sendEvent(target, name, 1)],
                ['client.sendEvent', () => client.sendEvent(target, name, 1)],
              ],
              /event name/,
              s,
            );
            return;
          }
          const id = nextId('event');
          stash.set(id, name);
          await engine.startWorkflow(waitsForStashedName, undefined, { workflowId: id });
          const waiting = await committed(client, id, 'waiting', isWaiting);
          expect(waiting.waitingOn.events.map((e) => e.eventName)).toEqual([name]);
          await (viaClient ? client : engine).sendEvent(id, name, { for: name });
          expect(await engine.result(id, { timeoutMs: 10_000 })).toBe('received');
          expect(received.get(id)).toEqual({ for: name });
          const history = (await client.inspect(id)).history;
          expect(history.find((e) => e.type === 'EventReceived')).toMatchObject({ eventName: name, payload: { for: name } });
        }),
        { numRuns: 50, endOnFailure: true, examples: NAME_EXAMPLES.map(([n]) => [n, true] as [Str, boolean]) },
      );
      // The target never saw any of the refused events.
      const state = await client.inspect(target);
      expect(state.queuedEvents).toEqual([]);
      expect(state.history.filter((e) => e.type === 'EventReceived')).toEqual([]);
      await expectHealthy(engine);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('event names in waitForEvent: an empty or over-long name is refused with InvalidArgumentError in the workflow', async () => {
    const { engine, client } = await open();
    try {
      await fc.assert(
        fc.asyncProperty(invalidName, async (s) => {
          const name = s.value;
          const id = nextId('wait');
          stash.set(id, name);
          await engine.startWorkflow(waitsForStashedName, undefined, { workflowId: id });
          const state = await committed(client, id, 'refused or waiting', (st) => hasEnded(st) || isWaiting(st));
          if (hasEnded(state)) {
            expect(state.result, show(name)).toMatchObject({ error: { name: 'InvalidArgumentError', code: 'DURAFLOW_INVALID_ARGUMENT' } });
            expect((state.result as { error: Caught }).error.message).toMatch(/event name/);
            return;
          }
          // A NUL or a lone surrogate may be kept as it is (no sendEvent can match it, but nothing breaks);
          // an empty or over-long one must be refused, as it is for sendEvent.
          expect(isEmptyOrOverLong(name), `waitForEvent(${show(name)}) was accepted`).toBe(false);
          expect(state.waitingOn.events.map((e) => e.eventName)).toEqual([name]);
        }),
        { numRuns: 25, endOnFailure: true, examples: INVALID_NAME_EXAMPLES },
      );
      await expectHealthy(engine);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('variable names: any valid name is kept exactly as given, live and stored', async () => {
    const { engine, client } = await open();
    try {
      await fc.assert(
        fc.asyncProperty(validName, async (s) => {
          const name = s.value;
          const id = nextId('var');
          const value = { n: counter, name: name.length };
          stash.set(id, [name, value]);
          await engine.startWorkflow(setsStashedVar, undefined, { workflowId: id });
          const state = await committed(client, id, 'refused or set', (st) => hasEnded(st) || isWaiting(st));
          if (hasEnded(state)) throw new Error(`setVar(${show(name)}) refused: ${JSON.stringify(state.result).slice(0, 300)}`);
          const live = (await engine.inspect(id)).vars;
          expect(Object.keys(live), `live vars for ${show(name)}`).toEqual([name]);
          expect(Object.hasOwn(live, name) && live[name], `live vars for ${show(name)}`).toEqual(value);
          await engine.sendEvent(id, 'finish');
          expect(await engine.result(id, { timeoutMs: 10_000 })).toBe('set');
          const stored = (await client.inspect(id)).vars;
          expect(Object.keys(stored), `stored vars for ${show(name)}`).toEqual([name]);
          expect(Object.hasOwn(stored, name) && stored[name], `stored vars for ${show(name)}`).toEqual(value);
        }),
        { numRuns: 40, endOnFailure: true, examples: NAME_EXAMPLES.filter(([n]) => isValidName(n.value)) },
      );
      await expectHealthy(engine);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('variable names: an empty or over-long name is refused with InvalidArgumentError in the workflow, storing no variable', async () => {
    const { engine, client } = await open();
    try {
      await fc.assert(
        fc.asyncProperty(invalidName, async (s) => {
          const name = s.value;
          const id = nextId('badvar');
          stash.set(id, [name, 1]);
          await engine.startWorkflow(setsStashedVar, undefined, { workflowId: id });
          const state = await committed(client, id, 'refused or set', (st) => hasEnded(st) || isWaiting(st));
          if (hasEnded(state)) {
            const error = (state.result as { error: Caught }).error;
            expect(error, `setVar(${show(name)})`).toMatchObject({ name: 'InvalidArgumentError', code: 'DURAFLOW_INVALID_ARGUMENT' });
            expect(error.message).toMatch(/variable/);
            expect(error.message.length).toBeLessThan(2_000);
            expect(state.vars).toEqual({});
            return;
          }
          // A NUL or a lone surrogate may be kept as given (JSON escapes them); empty or over-long may not.
          expect(isEmptyOrOverLong(name), `setVar(${show(name)}) was accepted`).toBe(false);
          expect(Object.keys((await client.inspect(id)).vars)).toEqual([name]);
        }),
        { numRuns: 25, endOnFailure: true, examples: INVALID_NAME_EXAMPLES },
      );
      await expectHealthy(engine);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('workflow inputs: round-trip as JSON, or refused at once with a typed error, storing nothing', async () => {
    const { engine, client } = await open();
    try {
      await fc.assert(
        fc.asyncProperty(hostilePayload, fc.boolean(), async (p, viaClient) => {
          const id = nextId('input');
          const before = await snapshot();
          const started = await settle(() =>
            viaClient
              ? client.startWorkflow('echoInput', p.value, { workflowId: id })
              : engine.startWorkflow(echoInput, p.value, { workflowId: id }),
          );
          if (!started.ok) {
            expect(p.expect.kind, `${p.label}: refused: ${String((started.error as Error).message).slice(0, 300)}`).not.toBe('ok');
            expectRefusal(started.error, p.expect, /workflow input/, p.label);
            expect(started.isAtOnce, `${p.label}: refused only after the event loop turned`).toBe(true);
            expect(await snapshot()).toBe(before);
            return;
          }
          expect(p.expect.kind, `${p.label}: accepted`).toBeOneOf(['ok', 'deep']);
          const json = p.expect.kind === 'ok' ? p.expect.json : (p.expect as { json: string }).json;
          expectJson(await engine.result(id), json, `${p.label}: result`);
          const state = await client.inspect(id);
          expectJson(state.input, json, `${p.label}: inspect().input`);
          expectJson((state.history[0] as { input?: unknown }).input, json, `${p.label}: WorkflowStarted.input`);
        }),
        { numRuns: 40, endOnFailure: true, examples: PAYLOAD_EXAMPLES.map(([p]) => [p, false] as [Payload, boolean]) },
      );
      await expectHealthy(engine);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('workflow results: round-trip as JSON, or fail the workflow with a typed error naming the result', async () => {
    const { engine, client } = await open();
    try {
      await fc.assert(
        fc.asyncProperty(hostilePayload, async (p) => {
          const id = nextId('output');
          stash.set(id, p.value);
          await engine.startWorkflow(returnsStashed, undefined, { workflowId: id });
          const outcome = await settle(() => client.result(id));
          const state = await client.inspect(id);
          if (!outcome.ok) {
            expect(p.expect.kind, `${p.label}: refused: ${JSON.stringify(state.error).slice(0, 300)}`).not.toBe('ok');
            expect(outcome.error).toBeInstanceOf(WorkflowFailedError);
            expectRefusal((outcome.error as WorkflowFailedError).cause, p.expect, /workflow result/, p.label);
            expect(state.status).toBe('failed');
            expect(state.error?.name).toBe(((outcome.error as WorkflowFailedError).cause as Error).name);
            return;
          }
          expect(p.expect.kind, `${p.label}: accepted`).toBeOneOf(['ok', 'deep']);
          const json = p.expect.kind === 'ok' ? p.expect.json : (p.expect as { json: string }).json;
          expectJson(outcome.value, json, `${p.label}: result`);
          expectJson(state.result, json, `${p.label}: inspect().result`);
        }),
        { numRuns: 40, endOnFailure: true, examples: PAYLOAD_EXAMPLES },
      );
      await expectHealthy(engine);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('event payloads: received as JSON, or refused at once with a typed error, storing nothing; the workflow goes on', async () => {
    const { engine, client } = await open();
    try {
      await fc.assert(
        fc.asyncProperty(hostilePayload, fc.boolean(), async (p, viaClient) => {
          const id = nextId('payload');
          stash.set(id, 'e');
          await engine.startWorkflow(waitsForStashedName, undefined, { workflowId: id });
          await committed(client, id, 'waiting', isWaiting);
          const before = await snapshot();
          const sent = await settle(() => (viaClient ? client : engine).sendEvent(id, 'e', p.value));
          if (!sent.ok) {
            expect(p.expect.kind, `${p.label}: refused: ${String((sent.error as Error).message).slice(0, 300)}`).not.toBe('ok');
            expectRefusal(sent.error, p.expect, /payload of event "e"/, p.label);
            expect(await snapshot()).toBe(before);
            // The workflow is untouched and still takes a good event.
            await engine.sendEvent(id, 'e', 'fallback');
            expect(await engine.result(id)).toBe('received');
            expect(received.get(id)).toBe('fallback');
            return;
          }
          expect(p.expect.kind, `${p.label}: accepted`).toBeOneOf(['ok', 'deep']);
          const json = p.expect.kind === 'ok' ? p.expect.json : (p.expect as { json: string }).json;
          expect(await engine.result(id)).toBe('received');
          expectJson(received.get(id), json, `${p.label}: payload the workflow received`);
          const event = (await client.inspect(id)).history.find((e) => e.type === 'EventReceived') as { payload?: unknown };
          expectJson(event.payload, json, `${p.label}: EventReceived.payload`);
        }),
        { numRuns: 40, endOnFailure: true, examples: PAYLOAD_EXAMPLES.map(([p]) => [p, true] as [Payload, boolean]) },
      );
      await expectHealthy(engine);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('variable values: kept as JSON (live and stored), or refused with a typed error in the workflow', async () => {
    const { engine, client } = await open();
    try {
      await fc.assert(
        fc.asyncProperty(hostilePayload, async (p) => {
          const id = nextId('value');
          stash.set(id, ['v', p.value]);
          await engine.startWorkflow(setsStashedVar, undefined, { workflowId: id });
          const state = await committed(client, id, 'refused or set', (st) => hasEnded(st) || isWaiting(st));
          if (hasEnded(state)) {
            const error = (state.result as { error?: Caught } | undefined)?.error;
            expect(p.expect.kind, `${p.label}: refused: ${JSON.stringify(error).slice(0, 300)}`).not.toBe('ok');
            expectRefusal(error, p.expect, /variable "v"/, p.label);
            expect(state.vars).toEqual({});
            return;
          }
          expect(p.expect.kind, `${p.label}: accepted`).toBeOneOf(['ok', 'deep']);
          const json = p.expect.kind === 'ok' ? p.expect.json : (p.expect as { json: string }).json;
          // A variable set to undefined (no JSON form) reads back as absent or null.
          const expected = json ?? 'null';
          const live = (await engine.inspect(id)).vars;
          if (!(json === undefined && !Object.hasOwn(live, 'v'))) expectJson(live.v, expected, `${p.label}: live var`);
          await engine.sendEvent(id, 'finish');
          expect(await engine.result(id)).toBe('set');
          const stored = (await client.inspect(id)).vars;
          if (!(json === undefined && !Object.hasOwn(stored, 'v'))) expectJson(stored.v, expected, `${p.label}: stored var`);
        }),
        { numRuns: 40, endOnFailure: true, examples: PAYLOAD_EXAMPLES },
      );
      await expectHealthy(engine);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  /** The activity result property over `payloads`: each is received as JSON, or fails the activity at once. */
  async function activityResults(payloads: fc.Arbitrary<Payload>, numRuns: number, examples: Payload[]): Promise<void> {
    const { engine, client } = await open();
    try {
      await fc.assert(
        fc.asyncProperty(payloads, async (p) => {
          const id = nextId('activity');
          stash.set(id, p.value);
          await engine.startWorkflow(callsProduce, undefined, { workflowId: id });
          const out = await engine.result(id, { timeoutMs: 10_000 });
          if (out !== 'received') {
            const error = (out as { error: Caught }).error;
            expect(p.expect.kind, `${p.label}: refused: ${JSON.stringify(error).slice(0, 300)}`).not.toBe('ok');
            expect(error, p.label).toMatchObject({ name: 'ActivityFailure', code: 'DURAFLOW_ACTIVITY_FAILURE', attempts: 1 });
            if (p.expect.kind === 'tooLarge') {
              expect(error.cause, p.label).toMatchObject({ name: 'PayloadTooLargeError', code: 'DURAFLOW_PAYLOAD_TOO_LARGE' });
            } else {
              expect(error.cause?.message.length, p.label).toBeGreaterThan(0);
            }
            return;
          }
          const got = received.get(id);
          const gotJson = JSON.stringify(got) as string | undefined;
          expect(p.expect.kind, `${p.label}: accepted as ${truncate(gotJson)}`).toBeOneOf(['ok', 'deep']);
          const json = p.expect.kind === 'ok' ? p.expect.json : (p.expect as { json: string }).json;
          expectJson(got, json, `${p.label}: activity result the workflow received`);
          const completed = (await client.inspect(id)).history.find((e) => e.type === 'ActivityCompleted') as { result?: unknown };
          expectJson(completed.result, json, `${p.label}: ActivityCompleted.result`);
        }),
        { numRuns, endOnFailure: true, examples: examples.map((p) => [p] as [Payload]) },
      );
      await expectHealthy(engine);
    } finally {
      await client.close();
      await engine.close();
    }
  }

  it('activity results: received as JSON, or (not JSON) the activity fails at once with ActivityFailure after 1 attempt', async () => {
    await activityResults(
      hostilePayload.filter((p) => p.expect.kind !== 'tooLarge'),
      40,
      PAYLOAD_EXAMPLES.map(([p]) => p).filter((p) => p.expect.kind !== 'tooLarge'),
    );
  });

  it('activity results: over maxPayloadBytes the activity fails at once with PayloadTooLargeError; up to it they are received', async () => {
    await activityResults(
      fc.oneof(boundary, tooLarge),
      15,
      PAYLOAD_EXAMPLES.map(([p]) => p).filter((p) => p.expect.kind === 'tooLarge' || p.label.startsWith('string of')),
    );
  });

  it('refuses names beginning with U+FEFF (byte order mark), which the embedded database would not return intact', async () => {
    const { engine, client } = await open();
    try {
      // A workflow that waits for nothing, finished, so the snapshot holds still.
      await (await engine.startWorkflow(echoInput, 1, { workflowId: 'bom-target' })).result();
      const before = await snapshot();
      const calls: [string, () => Promise<unknown>][] = [
        ['workflow id', () => engine.startWorkflow(echoInput, 1, { workflowId: '\ufeffid' })],
        ['version', () => engine.startWorkflow(echoInput, 1, { version: '\ufeffv' })],
        ['workflow name', () => client.startWorkflow('\ufeffname', 1)],
        ['event name', () => client.sendEvent('bom-target', '\ufeffgo', 1)],
      ];
      for (const [what, call] of calls) {
        const error = await call().then(
          () => new Error(`${what}: accepted`),
          (e: unknown) => e,
        );
        expect(error, what).toBeInstanceOf(InvalidArgumentError);
        expect((error as Error).message, what).toMatch(/U\+FEFF/);
      }
      expect(await snapshot()).toBe(before);
    } finally {
      await client.close();
      await engine.close();
    }
  });

  it('default limits: an input of exactly 1 MiB of JSON round-trips, one byte more and 10 MB are refused at once; 10 MB ids too', async () => {
    const engine = await startEngine(db, { workflows: { echoInput } });
    try {
      const exactly = 'x'.repeat(DEFAULT_LIMIT - 2);
      expect(await (await engine.startWorkflow(echoInput, exactly)).result()).toBe(exactly);
      const before = await snapshot();
      for (const [size, value] of [
        [DEFAULT_LIMIT + 1, `${exactly}x`],
        [10_000_002, 'y'.repeat(10_000_000)],
      ] as const) {
        const outcome = await settle(() => engine.startWorkflow(echoInput, value));
        if (outcome.ok) throw new Error(`an input of ${size} bytes was accepted`);
        expect(outcome.error).toBeInstanceOf(PayloadTooLargeError);
        expect(outcome.error).toMatchObject({ code: 'DURAFLOW_PAYLOAD_TOO_LARGE', bytes: size, limit: DEFAULT_LIMIT });
        expect((outcome.error as Error).message).toMatch(/workflow input/);
        expect(outcome.isAtOnce).toBe(true);
      }
      for (const id of HUGE) {
        const outcome = await settle(() => engine.startWorkflow(echoInput, 1, { workflowId: id }));
        if (outcome.ok) throw new Error(`an id of ${id.length} units was accepted`);
        expect(outcome.error).toBeInstanceOf(InvalidArgumentError);
        expect(outcome.isAtOnce).toBe(true);
      }
      expect(await snapshot()).toBe(before);
      expect(await (await engine.startWorkflow(echoInput, 'after')).result()).toBe('after');
    } finally {
      await engine.close();
    }
  });

  it('serves metrics on loopback by default', async () => {
    const engine = await startEngine(db, { workflows: { echoInput }, metrics: { port: 0 } });
    try {
      expect(engine.metricsUrl).toBeDefined();
      const url = new URL(engine.metricsUrl!);
      expect(url.hostname).toBe('127.0.0.1');
      expect(url.port).not.toBe('0');
      const response = await fetch(url);
      expect(response.status).toBe(200);
      await response.text();
    } finally {
      await engine.close();
    }
  });

  it('refuses an invalid schema (and other bad options) with RangeError/TypeError before touching the database', async () => {
    // Other test files create and drop schemas meanwhile: count this test's own candidates only.
    const badSchemas = ['a"; DROP SCHEMA public CASCADE; --', 'UPPER', 'x'.repeat(100), '', '1abc', 'a b', 'a-b', 'ä', 'a\0', 'pg_"x"', 'pg_temp', 'pg_duraflow', 'information_schema', 42];
    const existing = async (): Promise<unknown[]> =>
      db.query(`SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[]) OR lower(nspname) = ANY($1::text[])`, [
        badSchemas.map((x) => String(x).toLowerCase().replace(/\0/g, '')),
      ]);
    const schemasBefore = await existing();
    const refusals: Record<string, string> = {};
    const refusal = async (what: string, call: () => Promise<{ close(): Promise<void> }>, field: string): Promise<void> => {
      const outcome = await settle(call);
      if (outcome.ok) {
        await (outcome.value as { close(): Promise<void> }).close();
        refusals[what] = 'accepted';
        return;
      }
      const e = outcome.error as Error;
      refusals[what] = e.message.includes(`options.${field}`) ? `${e.name} naming options.${field}` : `${e.name}: ${e.message.slice(0, 200)}`;
    };
    const expected: Record<string, string> = {};
    for (const schema of badSchemas) {
      const what = `schema ${show(String(schema))}`;
      await refusal(`engine, ${what}`, () => createEngine({ database: db.database, schema: schema as string, logger: quietLogger, workflows: { echoInput } }), 'schema');
      await refusal(`client, ${what}`, () => createClient({ database: db.database, schema: schema as string, logger: quietLogger }), 'schema');
      expected[`engine, ${what}`] = 'RangeError naming options.schema';
      expected[`client, ${what}`] = 'RangeError naming options.schema';
    }
    const badOptions: [string, Record<string, unknown>, string][] = [
      ['metrics.port -1', { metrics: { port: -1 } }, 'RangeError'],
      ['metrics.port 65536', { metrics: { port: 65_536 } }, 'RangeError'],
      ['metrics.port 1.5', { metrics: { port: 1.5 } }, 'RangeError'],
      ['metrics.host empty', { metrics: { port: 0, host: '' } }, 'TypeError'],
      ['maxPayloadBytes 0', { maxPayloadBytes: 0 }, 'RangeError'],
      ['maxPayloadBytes NaN', { maxPayloadBytes: NaN }, 'RangeError'],
      ['maxPayloadBytes Infinity', { maxPayloadBytes: Infinity }, 'RangeError'],
      ['maxPayloadBytes "1024"', { maxPayloadBytes: '1024' }, 'RangeError'],
      ['activityMaxHeapMb 0', { activityMaxHeapMb: 0 }, 'RangeError'],
      ['dataDir FILE://', { dataDir: 'FILE:///tmp/duraflow-never' }, 'TypeError'],
      ['dataDir idb://', { dataDir: 'idb://duraflow-never' }, 'TypeError'],
      ['dataDir file://', { dataDir: 'file://' }, 'TypeError'],
    ];
    for (const [what, options, type] of badOptions) {
      const field = what.split(' ')[0]!;
      await refusal(what, () => createEngine({ database: db.database, schema: db.schema, logger: quietLogger, workflows: { echoInput }, ...options }), field);
      expected[what] = `${type} naming options.${field}`;
    }
    expect(refusals).toEqual(expected);
    expect(await existing()).toEqual(schemasBefore);
  });
});

describe('schema option', () => {
  it('refuses any string that is not a lower-case identifier of at most 48 chars, with RangeError, without connecting', async () => {
    const identifier = /^[a-z_][a-z0-9_]{0,47}$/;
    await fc.assert(
      fc.asyncProperty(
        fc
          .oneof(hostileString, fc.string({ unit: fc.constantFrom('a', 'Z', '_', '1', '"', ';', ' ', '-'), maxLength: 60 }).map((s) => new Str(s)))
          .filter((s) => !identifier.test(s.value)),
        async ({ value: schema }) => {
          const outcome = await settle(() => createEngine({ database: UNREACHABLE, schema, logger: quietLogger, workflows: { echoInput } }));
          if (outcome.ok) {
            await (outcome.value as Engine).close();
            throw new Error(`schema ${show(schema)} accepted`);
          }
          expect(outcome.error, show(schema)).toBeInstanceOf(RangeError);
          expect((outcome.error as Error).message).toMatch(/options\.schema/);
          expect(outcome.isAtOnce).toBe(true);
          const client = await settle(() => createClient({ database: UNREACHABLE, schema, logger: quietLogger }));
          expect(client.ok ? 'accepted' : (client.error as Error).name).toBe('RangeError');
        },
      ),
      { numRuns: 100, endOnFailure: true },
    );
  });

  it('names the problem without echoing a 10 MB schema name into the message', async () => {
    for (const schema of HUGE) {
      const outcome = await settle(() => createEngine({ database: UNREACHABLE, schema, logger: quietLogger, workflows: { echoInput } }));
      if (outcome.ok) throw new Error('accepted');
      expect((outcome.error as Error).message).toMatch(/options\.schema/);
      expect((outcome.error as Error).message.length, `message for ${show(schema)}`).toBeLessThan(2_000);
    }
  });
});
