import { closeWithDeadline } from './close-deadline.js';
import { type ClientOptions, resolveClientOptions } from './options.js';
import type { LeaseState, ResultOptions, SendEventOptions, StartWorkflowOptions, WorkflowHandle } from './workflow-store.js';
import { Notice, WorkflowStore } from './workflow-store.js';
import { WorkflowAlreadyExistsError } from './errors.js';
import { checkName } from './validate.js';
import type { WorkflowState } from './workflow-state.js';

/**
 * Starting workflows, sending events, reading state and awaiting results, from any process.
 * Every method returns a promise; bad arguments reject with `InvalidArgumentError`.
 */
export interface Client {
  /**
   * Creates a workflow and resolves once it is durably stored. A workflow whose name no running
   * engine registers stays `pending` until one does. Rejects with `WorkflowAlreadyExistsError` if
   * the id is taken.
   */
  startWorkflow<Output = unknown>(
    workflowName: string,
    input?: unknown,
    options?: StartWorkflowOptions,
  ): Promise<WorkflowHandle<Output>>;
  /**
   * Delivers an event to a pending or running workflow (kept until the workflow takes it; one it
   * never takes is deleted an hour after it ends). Rejects with `WorkflowNotFoundError`, or
   * `WorkflowClosedError` if it has ended.
   */
  sendEvent(workflowId: string, eventName: string, payload?: unknown, options?: SendEventOptions): Promise<void>;
  /** The workflow's state, history and variables. Rejects with `WorkflowNotFoundError`. */
  inspect(workflowId: string): Promise<WorkflowState>;
  /**
   * Resolves with the workflow's result once it completes; rejects with `WorkflowFailedError`
   * if it failed, `WorkflowNotFoundError`, or `TimeoutError` after `timeoutMs`.
   */
  result<Output = unknown>(workflowId: string, options?: ResultOptions): Promise<Output>;
  /**
   * One entry per workflow name ever leased on this schema, sorted by name: which engine runs its
   * workflows, or last did (see `isExpired`); a name no engine registers any more stays listed,
   * expired. Retries for `databaseRetryMs` while the database is unreachable.
   */
  leases(): Promise<LeaseState[]>;
  /**
   * Ends the calls waiting for a workflow's end with `EngineClosedError` and releases the
   * database (not a PGlite instance passed in). Waits for the database for `closeTimeoutMs` at
   * most: past it, the database's connections are dropped (the calls still under way end with
   * `EngineClosedError`) and it resolves.
   */
  close(): Promise<void>;
}

/** A handle on `workflowId` whose `result()` asks `client`. */
export function handleFor<Output>(client: Pick<Client, 'result'>, workflowId: string): WorkflowHandle<Output> {
  return { workflowId, result: (options) => client.result<Output>(workflowId, options) };
}

/**
 * The client over its store.
 *
 * Modes: open; closing (calls are refused, those under way end as their statements do, or with
 * the connections dropped at `closeTimeoutMs`); closed.
 */
class ClientImpl implements Client {
  readonly #store: WorkflowStore;
  readonly #closeTimeoutMs: number;
  #closing: Promise<void> | undefined;

  constructor(store: WorkflowStore, closeTimeoutMs: number) {
    this.#store = store;
    this.#closeTimeoutMs = closeTimeoutMs;
  }

  async startWorkflow<Output>(
    workflowName: string,
    input?: unknown,
    options?: StartWorkflowOptions,
  ): Promise<WorkflowHandle<Output>> {
    const row = this.#store.prepareStart(checkName(workflowName, 'workflow name'), input, options);
    if (!(await this.#store.insertStart(row))) throw new WorkflowAlreadyExistsError(row.id);
    return handleFor<Output>(this, row.id);
  }

  async sendEvent(workflowId: string, eventName: string, payload?: unknown, options?: SendEventOptions): Promise<void> {
    await this.#store.storeEvent(workflowId, eventName, payload, options);
    await this.#store.notifyEngines(Notice.Event);
  }

  async inspect(workflowId: string): Promise<WorkflowState> {
    return this.#store.inspect(workflowId);
  }

  async result<Output>(workflowId: string, options?: ResultOptions): Promise<Output> {
    return this.#store.result<Output>(workflowId, options);
  }

  async leases(): Promise<LeaseState[]> {
    return this.#store.leases();
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    // Closing waits for the UNLISTEN and for each statement under way, which a database that does
    // not answer holds for their timeouts (15 and 30 s) or longer: past the deadline, the client
    // gives up on it, as the engine does. Its calls are refused by then, so they end with
    // EngineClosedError whatever the dropped connections make them fail with.
    await closeWithDeadline(this.#closeTimeoutMs, () => this.#store.close(), () => this.#abandon());
  }

  #abandon(): void {
    this.#store.logger.warn(
      { closeTimeoutMs: this.#closeTimeoutMs },
      'the database did not let close() finish in time; dropping its connections (the calls under way end with EngineClosedError)',
    );
    this.#store.sql.abort();
  }
}

/**
 * A client for a process that runs no workflows (a web server, a CLI): same database options as
 * the engine, none of its workers.
 */
export async function createClient(options: ClientOptions = {}): Promise<Client> {
  const resolved = resolveClientOptions(options);
  return new ClientImpl(await WorkflowStore.open(resolved, resolved.migrate), resolved.closeTimeoutMs);
}
