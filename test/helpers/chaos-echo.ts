/**
 * A TCP echo server and client, to test the fault proxy without a database: whatever a client
 * sends, the server records and sends back.
 */
import net from 'node:net';

export interface EchoServer {
  port: number;
  /** Connections the server has accepted so far. */
  readonly accepted: number;
  /** Everything received, all connections together, as text. */
  readonly received: string;
  close(): Promise<void>;
}

export async function startEchoServer(): Promise<EchoServer> {
  let accepted = 0;
  let received = '';
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      socket.write(chunk);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    get accepted() {
      return accepted;
    },
    get received() {
      return received;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface EchoClient {
  socket: net.Socket;
  /** Everything received so far, as text. */
  readonly received: string;
  /** Resolves once `text` has been received. */
  whenReceived(text: string): Promise<void>;
  /** Resolves when the connection has closed, with the error code it closed with, if any. */
  closed: Promise<string | undefined>;
}

/** Connects to `port`; rejects with the connection error (ECONNREFUSED, …). */
export function connectEcho(port: number): Promise<EchoClient> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    let error: string | undefined;
    const waiters: { text: string; resolve: () => void }[] = [];
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      for (let i = waiters.length - 1; i >= 0; i--) if (received.includes(waiters[i]!.text)) waiters.splice(i, 1)[0]!.resolve();
    });
    const closed = new Promise<string | undefined>((done) => socket.on('close', () => done(error)));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
    });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve({
        socket,
        get received() {
          return received;
        },
        whenReceived: (text) =>
          received.includes(text) ? Promise.resolve() : new Promise<void>((done) => waiters.push({ text, resolve: done })),
        closed,
      });
    });
  });
}
