/**
 * QMP over a byte stream: Unix and TCP sockets, as a listener (server=on) or as a connection out
 * to a listening client (QEMU's default for -qmp without server=on). Messages go out as CRLF-ended
 * lines. Unix sockets are created 0600, replacing a stale file as QEMU does, and removed on close.
 * A listener serves any number of clients at once (qmigd's extension), or with exclusive=on one
 * at a time as QEMU does.
 */
import { chmodSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { Connection } from '../session.js';
import { ExclusiveQueue, MAX_HELD_BYTES, MAX_WAITING, type Turn } from './exclusive.js';
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

/** How a connection starts: with what it sent while it waited for an exclusive monitor. */
interface AttachOptions {
  held?: Buffer[];
  /** It shut its sending side while it waited. */
  ended?: boolean;
  /** The listener's clients with a session, which a yank drops; this one is among them until it closes. */
  served?: Set<net.Socket>;
  onClose?: () => void;
}

function attach(socket: net.Socket, description: string, host: TransportHost, opts: AttachOptions = {}): void {
  socket.setNoDelay?.(true);
  const session = host.accept(socketConnection(socket, description, host));
  opts.served?.add(socket);
  socket.on('data', (chunk: Buffer) => session.feed(chunk));
  // The client shut its sending side: its requests are still answered (allowHalfOpen).
  socket.on('end', () => session.endOfInput());
  socket.on('drain', () => session.outputDrained());
  socket.on('error', (err) => host.log.debug({ err, client: description }, 'client socket error'));
  socket.on('close', () => {
    opts.served?.delete(socket);
    session.closedByPeer();
    opts.onClose?.();
  });
  // Bytes never come on the turn that attaches the listeners, so these are first, in order.
  for (const chunk of opts.held ?? []) session.feed(chunk);
  if (opts.ended) session.endOfInput();
}

interface ExclusiveMonitor {
  queue: ExclusiveQueue;
  served: Set<net.Socket>;
  where: () => string;
}

/**
 * A connection to an exclusive monitor (see exclusive.ts): served at once if the monitor is free,
 * else held un-greeted until its turn, else closed.
 */
function queueOrAttach(socket: net.Socket, description: string, host: TransportHost, monitor: ExclusiveMonitor): void {
  const { queue, served } = monitor;
  const held: Buffer[] = [];
  let heldBytes = 0;
  let ended = false;
  let pausedHere = false;
  // Its bytes are read (kept, never lexed) only so that a client that gives up is noticed.
  const hold = (chunk: Buffer): void => {
    held.push(chunk);
    heldBytes += chunk.length;
    if (heldBytes >= MAX_HELD_BYTES && !pausedHere) {
      pausedHere = true;
      socket.pause();
    }
  };
  // A client that shuts its side having sent nothing is gone, or has nothing to be answered. One
  // that sent requests may be waiting for their replies (`... | socat`): QEMU answers it in its
  // turn, and so does this.
  const onEnd = (): void => {
    ended = true;
    if (heldBytes === 0) socket.destroy();
  };
  const onError = (err: Error): void => host.log.debug({ err, client: description }, 'waiting client socket error');
  const onClose = (): void => queue.leave(turn);
  const turn: Turn = {
    start: () => {
      socket.off('data', hold).off('end', onEnd).off('error', onError).off('close', onClose);
      // Before the session exists, so that its own flow control (it may pause input) decides from here on.
      if (pausedHere) socket.resume();
      attach(socket, description, host, { held, ended, served, onClose: () => queue.leave(turn) });
    },
    // QEMU's kernel backlog would refuse this connection; Node has accepted it: close it.
    refuse: () => socket.destroy(),
  };
  const outcome = queue.arrive(turn);
  if (outcome === 'waiting') {
    socket.on('data', hold).on('end', onEnd).on('error', onError).on('close', onClose);
    host.log.info({ client: description, qmp: monitor.where() }, 'client waits: the exclusive monitor is in use');
  } else if (outcome === 'refused') {
    host.log.warn({ client: description, qmp: monitor.where(), waiting: MAX_WAITING }, 'client refused: the exclusive monitor is in use and its queue is full');
  }
}

export async function openStreamTransport(spec: Extract<QmpSpec, { kind: 'unix' | 'tcp' }>, host: TransportHost): Promise<Transport> {
  if (!spec.server) return connectOut(spec, host);
  let where = '';
  /** Every connection, and the ones with a session: a yank drops these, not those still waiting (as in QEMU). */
  const sockets = new Set<net.Socket>();
  const served = new Set<net.Socket>();
  const queue = spec.exclusive ? new ExclusiveQueue() : undefined;
  const server = net.createServer({ pauseOnConnect: false, allowHalfOpen: true }, (socket) => {
    const peer = spec.kind === 'unix' ? `unix:${spec.path}` : `tcp:${socket.remoteAddress}:${socket.remotePort}`;
    if (queue) queueOrAttach(socket, peer, host, { queue, served, where: () => where });
    else attach(socket, peer, host, { served });
  });
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
    // No host: every interface, as QEMU's tcp::PORT (Node binds them all when given none).
    await listen(server, spec.host ? { host: spec.host, port: spec.port } : { port: spec.port });
  }
  const addr = server.address();
  where = spec.kind === 'unix' ? `unix:${spec.path}` : `tcp:${(addr as net.AddressInfo).address}:${(addr as net.AddressInfo).port}`;
  return {
    where,
    dropClients: () => served.forEach((s) => s.destroy()),
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
