/**
 * A TCP proxy in front of Postgres that injects network faults, for the chaos tests. It listens on
 * 127.0.0.1 (a free port) and forwards every connection to the database (127.0.0.1:5432 unless
 * told otherwise); give the engine `proxy.url(DATABASE_URL)` instead of the database's URL.
 *
 * Faults:
 * - `cutAll()`: resets every open connection at once (the client sees ECONNRESET, the server a
 *   vanished client). `cutOnNextRequest()`: the same, right after the next request bytes went
 *   through (a statement in flight).
 * - `refuse()` … `accept()`: the database is unreachable: the listening socket is closed, so new
 *   connections are refused (ECONNREFUSED).
 * - `blackhole()` … `resume()`: new connections are accepted but nothing is forwarded or answered
 *   (a host that drops packets); on resume they are connected through, as a retried SYN would be.
 * - `hang()` … `resume()`: no byte moves in either direction on any connection, open or new,
 *   nothing is closed; on resume everything held is delivered in order.
 * - `holdResponses()`: requests still reach the database but its answers are held back;
 *   `whenResponseHeld()` resolves once one is, i.e. once a statement has run. A `cutAll()` then
 *   loses the answers: the client cannot know whether its statement committed.
 *   `holdResponsesTo(marker)` does the same only on connections that sent a request containing
 *   `marker` (say, a prepared statement's name).
 * - `loseResponseTo(marker)`: the next request containing `marker` runs (and commits), its answer
 *   is dropped and its connection reset: an ambiguous commit, on demand.
 *
 * `whenRequest(marker)` resolves once a request containing `marker` has been forwarded.
 *
 * Not a sleep-based tool: the durations of outages are the test's choice; every wait here is for
 * an observed event.
 */
import net from 'node:net';

interface Link {
  id: number;
  client: net.Socket;
  /** Undefined until connected upstream (while blackholed). */
  server: net.Socket | undefined;
  /** Client → server bytes not forwarded yet. */
  up: Buffer[];
  /** Set by `loseResponseTo`: the next answer on this link is dropped and the link reset. */
  loseResponse?: () => void;
  /** Set by `holdResponsesTo`: answers on this link are held until `resume()`. */
  holdDown?: boolean;
  /** Server → client bytes not forwarded yet. */
  down: Buffer[];
  closed: boolean;
}

export interface FaultProxyStats {
  /** Connections accepted. */
  accepted: number;
  /** Connections reset by cuts. */
  cut: number;
  /** Bytes forwarded each way. */
  bytesUp: number;
  bytesDown: number;
}

export class FaultProxy {
  readonly port: number;
  readonly stats: FaultProxyStats = { accepted: 0, cut: 0, bytesUp: 0, bytesDown: 0 };
  readonly #target: { host: string; port: number };
  readonly #links = new Set<Link>();
  #server: net.Server | undefined;
  #nextId = 1;
  #holdUp = false;
  #holdDown = false;
  #blackholed = false;
  #closed = false;
  #cutOnRequest: { marker: string | undefined; fire: () => void } | undefined;
  #loseResponseTo: { marker: string; arm: (link: Link) => void } | undefined;
  #holdResponsesTo: { marker: string; firstOnly: boolean } | undefined;
  #requestWaiters: { marker: string; resolve: () => void }[] = [];
  #responseHeldWaiters: (() => void)[] = [];

  private constructor(port: number, server: net.Server, target: { host: string; port: number }) {
    this.port = port;
    this.#server = server;
    this.#target = target;
  }

  /** Starts a proxy on a free port of 127.0.0.1 in front of `target`. */
  static async start(target: { host?: string; port?: number } = {}): Promise<FaultProxy> {
    // By default, in front of the test database (DATABASE_URL), wherever it is.
    const database = process.env.DATABASE_URL ? new URL(process.env.DATABASE_URL) : undefined;
    const resolved = {
      host: target.host ?? (database?.hostname || '127.0.0.1'),
      port: target.port ?? Number(database?.port || 5432),
    };
    let proxy: FaultProxy | undefined;
    const server = net.createServer((socket) => proxy!.#onConnection(socket));
    const port = await listen(server, 0);
    proxy = new FaultProxy(port, server, resolved);
    return proxy;
  }

  /** `databaseUrl` with its host and port replaced by the proxy's. */
  url(databaseUrl: string): string {
    const u = new URL(databaseUrl);
    u.hostname = '127.0.0.1';
    u.port = String(this.port);
    return u.toString();
  }

  /** Connections open through the proxy now. */
  get openConnections(): number {
    return this.#links.size;
  }

  /** Bytes held back now, both ways, on every connection. */
  get heldBytes(): number {
    let bytes = 0;
    for (const link of this.#links) for (const chunk of [...link.up, ...link.down]) bytes += chunk.length;
    return bytes;
  }

  /** Whether new connections are being refused. */
  get isRefusing(): boolean {
    return this.#server === undefined;
  }

  /** Resets every open connection now; returns how many there were. Held bytes are dropped. */
  cutAll(): number {
    const links = [...this.#links];
    for (const link of links) this.#reset(link);
    this.stats.cut += links.length;
    return links.length;
  }

  /**
   * Resolves after cutting every connection right after the next request bytes are forwarded to
   * the database (so a statement is in flight on the connection that sent them). With `marker`,
   * only a request whose bytes contain it counts (e.g. a prepared statement's name, which every
   * Bind message carries).
   */
  cutOnNextRequest(marker?: string): Promise<number> {
    return new Promise((resolve) => {
      this.#cutOnRequest = {
        marker,
        fire: () => {
          this.#cutOnRequest = undefined;
          // Let the bytes leave this process first: the server then has the request.
          setImmediate(() => resolve(this.cutAll()));
        },
      };
    });
  }

  /**
   * Lets the next request containing `marker` through, then drops the database's answer to it and
   * resets that connection: the statement ran (and, outside a transaction block, committed), but
   * the client only sees a broken connection. Resolves once that is done.
   */
  loseResponseTo(marker: string): Promise<void> {
    return new Promise((resolve) => {
      this.#loseResponseTo = {
        marker,
        arm: (link) => {
          this.#loseResponseTo = undefined;
          link.loseResponse = () => {
            this.#reset(link);
            this.stats.cut++;
            resolve();
          };
        },
      };
    });
  }

  /** New connections are refused (ECONNREFUSED) until `accept()`; open ones are left alone. */
  async refuse(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      // close() waits for the connections it accepted; those are ours to manage, not its.
      setImmediate(resolve);
    });
  }

  /** Accepts connections again after `refuse()`, on the same port. */
  async accept(): Promise<void> {
    if (this.#server || this.#closed) return;
    const server = net.createServer((socket) => this.#onConnection(socket));
    await listen(server, this.port);
    this.#server = server;
  }

  /** New connections get no answer (not even a connection to the database) until `resume()`. */
  blackhole(): void {
    this.#blackholed = true;
  }

  /** No byte moves in either direction, on open and new connections, until `resume()`. */
  hang(): void {
    this.#holdUp = true;
    this.#holdDown = true;
  }

  /** Requests go through, answers are held until `resume()` (or dropped by a cut). */
  holdResponses(): void {
    this.#holdDown = true;
  }

  /**
   * From now on, a connection that sends a request containing `marker` has every answer held
   * (from that request on) until `resume()`; other connections are untouched. With `firstOnly`,
   * only the first such connection is held: the ones that replace it work.
   */
  holdResponsesTo(marker: string, options: { firstOnly?: boolean } = {}): void {
    this.#holdResponsesTo = { marker, firstOnly: options.firstOnly ?? false };
  }

  /** Resolves once a request containing `marker` has gone through to the database. */
  whenRequest(marker: string): Promise<void> {
    return new Promise((resolve) => this.#requestWaiters.push({ marker, resolve }));
  }

  /** Resolves once an answer of the database is being held (after `holdResponses()` or `hang()`). */
  whenResponseHeld(): Promise<void> {
    for (const link of this.#links) if (link.down.length > 0) return Promise.resolve();
    return new Promise((resolve) => this.#responseHeldWaiters.push(resolve));
  }

  /** Ends `hang`, `holdResponses` and `blackhole`: delivers what was held, connects what waited. */
  resume(): void {
    this.#holdUp = false;
    this.#holdDown = false;
    this.#blackholed = false;
    this.#holdResponsesTo = undefined;
    for (const link of this.#links) {
      link.holdDown = false;
      if (!link.server) this.#connectUpstream(link);
      else this.#flush(link);
    }
  }

  /** Stops listening and resets every connection. */
  async close(): Promise<void> {
    this.#closed = true;
    this.cutAll();
    await this.refuse();
  }

  #onConnection(client: net.Socket): void {
    if (this.#closed) {
      client.destroy();
      return;
    }
    this.stats.accepted++;
    const link: Link = { id: this.#nextId++, client, server: undefined, up: [], down: [], closed: false };
    this.#links.add(link);
    client.setNoDelay(true);
    client.on('data', (chunk: Buffer) => {
      if (link.closed) return;
      if (this.#holdUp || !link.server || link.server.connecting) {
        link.up.push(chunk);
        return;
      }
      this.#forwardUp(link, [chunk]);
    });
    client.on('error', () => undefined);
    client.on('close', () => this.#close(link));
    if (!this.#blackholed) this.#connectUpstream(link);
  }

  #connectUpstream(link: Link): void {
    if (link.closed || link.server) return;
    const server = net.connect(this.#target.port, this.#target.host);
    link.server = server;
    server.setNoDelay(true);
    server.on('connect', () => this.#flush(link));
    server.on('data', (chunk: Buffer) => {
      if (link.closed) return;
      if (link.loseResponse) {
        link.loseResponse();
        return;
      }
      if (this.#holdDown || link.holdDown) {
        link.down.push(chunk);
        const waiters = this.#responseHeldWaiters;
        this.#responseHeldWaiters = [];
        for (const resolve of waiters) resolve();
        return;
      }
      this.stats.bytesDown += chunk.length;
      link.client.write(chunk);
    });
    server.on('error', () => undefined);
    server.on('close', () => this.#close(link));
  }

  #flush(link: Link): void {
    if (link.closed || !link.server || link.server.connecting) return;
    if (!this.#holdUp && link.up.length > 0) {
      const up = link.up;
      link.up = [];
      this.#forwardUp(link, up);
    }
    if (!this.#holdDown && !link.holdDown && link.down.length > 0) {
      const down = link.down;
      link.down = [];
      for (const chunk of down) {
        this.stats.bytesDown += chunk.length;
        link.client.write(chunk);
      }
    }
  }

  #forwardUp(link: Link, chunks: Buffer[]): void {
    const matches = (marker: string | undefined): boolean =>
      marker === undefined || chunks.some((c) => c.includes(marker, 0, 'latin1'));
    if (this.#holdResponsesTo !== undefined && matches(this.#holdResponsesTo.marker)) {
      link.holdDown = true;
      if (this.#holdResponsesTo.firstOnly) this.#holdResponsesTo = undefined;
    }
    for (const chunk of chunks) {
      this.stats.bytesUp += chunk.length;
      link.server!.write(chunk);
    }
    for (let i = this.#requestWaiters.length - 1; i >= 0; i--) {
      const waiter = this.#requestWaiters[i]!;
      if (matches(waiter.marker)) {
        this.#requestWaiters.splice(i, 1);
        waiter.resolve();
      }
    }
    if (this.#loseResponseTo && matches(this.#loseResponseTo.marker)) this.#loseResponseTo.arm(link);
    if (this.#cutOnRequest && matches(this.#cutOnRequest.marker)) this.#cutOnRequest.fire();
  }

  #reset(link: Link): void {
    if (link.closed) return;
    link.closed = true;
    link.up = [];
    link.down = [];
    this.#links.delete(link);
    hardClose(link.client);
    if (link.server) hardClose(link.server);
  }

  /** One side closed: close the other (after delivering what it may still receive). */
  #close(link: Link): void {
    if (link.closed) return;
    link.closed = true;
    this.#links.delete(link);
    if (link.down.length === 0 && !link.client.destroyed) link.client.end();
    else link.client.destroy();
    if (link.server) {
      if (link.up.length === 0 && !link.server.destroyed) link.server.end();
      else link.server.destroy();
    }
  }
}

/** Closes with a TCP RST (the peer sees ECONNRESET), or plainly if the socket cannot reset. */
function hardClose(socket: net.Socket): void {
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}

function listen(server: net.Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}
