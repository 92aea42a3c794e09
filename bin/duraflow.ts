#!/usr/bin/env node
/**
 * duraflow's command line: reads a workflow's state, or which engine runs each workflow name,
 * from the database, without the workflows' code.
 *
 *   duraflow inspect <workflowId> [--database URL | --data-dir DIR] [--schema NAME]
 *   duraflow leases [--database URL | --data-dir DIR] [--schema NAME]
 *
 * Without --database or --data-dir it uses DATABASE_URL, else the embedded database in
 * ./.duraflow (which must not be open in another process at the same time). It only reads: a
 * schema or data directory that holds no duraflow tables is an error, not something to create.
 * Exit codes: 0 done, 1 failed, 2 a command line it cannot use, 3 no such workflow.
 */
import { parseArgs } from 'node:util';

import { createClient, EngineError } from '../engine/index.js';

const OPTIONS = '[--database URL | --data-dir DIR] [--schema NAME]';
const USAGE = `usage: duraflow inspect <workflowId> ${OPTIONS}\n       duraflow leases ${OPTIONS}`;

/** Exit code of a command line that cannot be understood (as for a missing workflow id). */
const USAGE_ERROR = 2;

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      database: { type: 'string' },
      'data-dir': { type: 'string' },
      schema: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}

/**
 * Writes `text` to stdout and resolves once it has all been handed on: process.exit() drops what a
 * pipe has not taken yet (`duraflow inspect … | jq` got the first 64 KiB). A reader that went away
 * (`| head`) ends the output quietly, as it would a shell tool.
 */
function writeOut(text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    // The write's callback reports its failure; the stream's 'error' event would be uncaught.
    process.stdout.on('error', () => undefined);
    process.stdout.write(text, (error) => {
      if (error && (error as NodeJS.ErrnoException).code !== 'EPIPE') reject(error);
      else resolve();
    });
  });
}

/** What is wrong with a parsed command line, said in a sentence; undefined if it can be run. */
function commandLineProblem(positionals: string[], values: ReturnType<typeof parse>['values']): string | undefined {
  const [command, ...rest] = positionals;
  if (command === undefined) return 'no command given (inspect or leases)';
  if (command !== 'inspect' && command !== 'leases') return `unknown command ${JSON.stringify(command)} (inspect or leases)`;
  if (command === 'inspect' && rest.length === 0) return 'inspect needs a workflow id';
  const extra = rest.slice(command === 'inspect' ? 1 : 0);
  if (extra.length > 0) return `unexpected argument ${JSON.stringify(extra[0])}`;
  // One database or the other: with both, one would be ignored without a word.
  if (values.database !== undefined && values['data-dir'] !== undefined) return 'give --database or --data-dir, not both';
  return undefined;
}

async function main(argv: string[]): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    // An unknown or valueless flag is a usage error like a missing argument, not a failure.
    console.error(`duraflow: ${error instanceof Error ? error.message : String(error)}\n${USAGE}`);
    return USAGE_ERROR;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const problem = commandLineProblem(positionals, values);
  if (problem !== undefined) {
    console.error(`duraflow: ${problem}\n${USAGE}`);
    return USAGE_ERROR;
  }
  const [command, workflowId] = positionals;
  const inspected = command === 'inspect' ? workflowId : undefined;
  // A flag given empty (`--schema "$UNSET"`) goes to createClient, which refuses it, rather than
  // leaving its default to read another schema or database.
  const dataDir = values['data-dir'];
  const database = values.database ?? (dataDir !== undefined ? undefined : process.env.DATABASE_URL || undefined);
  const client = await createClient({
    ...(database !== undefined ? { database } : {}),
    ...(dataDir !== undefined ? { dataDir } : {}),
    ...(values.schema !== undefined ? { schema: values.schema } : {}),
    migrate: false,
  });
  try {
    const shown = inspected !== undefined ? await client.inspect(inspected) : await client.leases();
    await writeOut(`${JSON.stringify(shown, null, 2)}\n`);
    return 0;
  } finally {
    await client.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    const message = error instanceof Error ? error.message : String(error);
    console.error(`duraflow: ${message}`);
    process.exit(error instanceof EngineError && error.code === 'DURAFLOW_WORKFLOW_NOT_FOUND' ? 3 : 1);
  },
);
