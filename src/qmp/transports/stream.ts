/**
 * QMP over a byte stream: Unix and TCP sockets, as a listener (server=on) or as a connection out
 * to a listening client (QEMU's default for -qmp without server=on). Messages go out as CRLF-ended
 * lines. Unix sockets are created 0600, replacing a stale file as QEMU does, and removed on close.
 */
import { chmodSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { Connection } from '../session.js';
import type { Transport, TransportHost } from './transport.js';
import type { QmpSpec } from './spec.js';

/** A client that reads nothing while this much is queued for it is cut off, not waited for. */
export const MAX_OUTPUT_BUFFER = 64 * 1024 * 1024;

export function socketConnection(socket: net.Socket, description: string, host: TransportHost): Connection {
  return {
    description,
    get queuedOutput() {
      return socket.writableLength;
    },
    queuedInput: 0,
    send(text) {
      if (socket.destroyed) return;
      if (socket.writableLength > MAX_OUTPUT_BUFFER) {
        host.log.warn({ client: description, queued: socket.writableLength }, 'client is not reading its replies; disconnecting it');
        socket.destroy();
        return;
      }
      socket.write(`${text}\r\n`);
    },
    close: () => socket.end(),
    abort: () => socket.destroy(),
    pauseInput: () => socket.pause(),
    resumeInput: () => socket.resume(),
  };
}

function attach(socket: net.Socket, description: string, host: TransportHost): void {
  socket.setNoDelay?.(true);
  const session = host.accept(socketConnection(socket, description, host));
  socket.on('data', (chunk: Buffer) => session.feed(chunk));
  // The client shut its sending side: its requests are still answered (allowHalfOpen).
  socket.on('end', () => session.endOfInput());
  socket.on('drain', () => session.outputDrained());
  socket.on('error', (err) => host.log.debug({ err, client: description }, 'client socket error'));
  socket.on('close', () => session.closedByPeer());
}

export async function openStreamTransport(spec: Extract<QmpSpec, { kind: 'unix' | 'tcp' }>, host: TransportHost): Promise<Transport> {
  if (!spec.server) return connectOut(spec, host);
  const server = net.createServer({ pauseOnConnect: false, allowHalfOpen: true }, (socket) => {
    const peer = spec.kind === 'unix' ? `unix:${spec.path}` : `tcp:${socket.remoteAddress}:${socket.remotePort}`;
    attach(socket, peer, host);
  });
  const sockets = new Set<net.Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  if (spec.kind === 'unix') {
    try {
      unlinkSync(spec.path);
    } catch {
      /* nothing there: fine */
    }
    const old = process.umask(0o177); // the socket is born 0600; no window where others may connect
    try {
      await listen(server, { path: spec.path });
    } finally {
      process.umask(old);
    }
    chmodSync(spec.path, 0o600);
  } else {
    await listen(server, { host: spec.host, port: spec.port });
  }
  const addr = server.address();
  const where = spec.kind === 'unix' ? `unix:${spec.path}` : `tcp:${(addr as net.AddressInfo).address}:${(addr as net.AddressInfo).port}`;
  return {
    where,
    dropClients: () => sockets.forEach((s) => s.destroy()),
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (spec.kind === 'unix') {
        try {
          unlinkSync(spec.path);
        } catch {
          /* already gone */
        }
      }
    },
  };
}

function listen(server: net.Server, options: net.ListenOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function connectOut(spec: Extract<QmpSpec, { kind: 'unix' | 'tcp' }>, host: TransportHost): Promise<Transport> {
  return new Promise((resolve, reject) => {
    const options = spec.kind === 'unix' ? { path: spec.path } : { host: spec.host, port: spec.port };
    const where = spec.kind === 'unix' ? `unix:${spec.path}` : `tcp:${spec.host}:${spec.port}`;
    const socket = net.connect({ ...options, allowHalfOpen: true });
    socket.once('error', (err) => reject(new Error(`Failed to connect to '${where}': ${err.message}`)));
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      attach(socket, where, host);
      resolve({ where: `${where} (client)`, dropClients: () => socket.destroy(), close: async () => void socket.destroy() });
    });
  });
}
