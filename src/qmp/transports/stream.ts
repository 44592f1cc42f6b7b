/**
 * QMP over a byte stream: Unix and TCP sockets, as a listener (server=on) or as a connection out
 * to a listening client (QEMU's default for -qmp without server=on). Messages go out as CRLF-ended
 * lines. Unix sockets are created 0600, replacing a stale file as QEMU does, and removed on close.
 * A listener serves any number of clients at once (qmigd's extension), or with exclusive=on one
 * at a time as QEMU does.
 *
 * A unix connection is read through the native reader (src/native), which hands over the
 * descriptors a client sends with its bytes (SCM_RIGHTS); its net.Socket only writes, and never
 * reads, since libuv would read bytes without their descriptors and the kernel would close those.
 * Each unix monitor keeps one list of named descriptors for all its clients, as a QEMU monitor
 * keeps its list across connections. TCP connections read as any socket does.
 */
import { chmodSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { nativeUnavailable, UnixReader } from '../../native/unix-reader.js';
import { listenFailure } from '../../errno.js';
import { closeFd, NamedFds } from '../descriptors.js';
import type { Connection } from '../session.js';
import { ExclusiveQueue, MAX_HELD_BYTES, MAX_WAITING, type Turn } from './exclusive.js';
import type { Transport, TransportHost } from './transport.js';
import type { QmpSpec } from './spec.js';

/** A client that reads nothing while this much is queued for it is cut off, not waited for. */
export const MAX_OUTPUT_BUFFER = 64 * 1024 * 1024;

/** Descriptors a waiting client (exclusive=on) may have sent before the transport stops reading it. */
const MAX_HELD_FDS = 64;

interface InputHandlers {
  data(chunk: Buffer, fds: number[]): void;
  end(): void;
}

/** Where a connection's bytes come from: the socket itself, or the native reader with descriptors. */
interface ConnectionInput {
  /** Where bytes go from now on. */
  handle(handlers: InputHandlers): void;
  pause(): void;
  resume(): void;
  /** Whether descriptors can come (unix, with the addon). */
  readonly carriesFds: boolean;
}

function socketInput(socket: net.Socket): ConnectionInput {
  let to: InputHandlers | undefined;
  socket.on('data', (chunk: Buffer) => to?.data(chunk, []));
  socket.on('end', () => to?.end());
  return {
    carriesFds: false,
    handle: (h) => (to = h),
    pause: () => socket.pause(),
    resume: () => socket.resume(),
  };
}

let warnedNoNative = false;

/** A unix connection's input: through the native reader, the socket never reading (see above). */
function unixInput(socket: net.Socket, description: string, host: TransportHost): ConnectionInput {
  const fd = UnixReader.fdOf(socket);
  const missing = nativeUnavailable();
  if (fd === undefined || missing) {
    if (missing && !warnedNoNative) {
      warnedNoNative = true;
      host.log.warn({ err: missing.message }, 'unix monitors cannot receive descriptors');
    }
    const input = socketInput(socket);
    socket.resume();
    return input;
  }
  let to: InputHandlers | undefined;
  const reader = new UnixReader(fd, {
    data: (chunk, fds, truncated) => {
      if (truncated) {
        host.log.warn({ client: description, kept: fds.length }, 'client sent more than 16 descriptors with one message: the kernel dropped the rest, as for QEMU');
      }
      if (to) to.data(chunk, fds);
      else fds.forEach(closeFd);
    },
    end: () => to?.end(),
    error: (err) => {
      host.log.debug({ err, client: description }, 'client socket error');
      socket.destroy();
    },
  });
  socket.once('close', () => reader.close());
  reader.start();
  return {
    carriesFds: true,
    handle: (h) => (to = h),
    pause: () => reader.stop(),
    resume: () => reader.start(),
  };
}

function socketConnection(socket: net.Socket, description: string, host: TransportHost, input: ConnectionInput, namedFds?: NamedFds): Connection {
  return {
    description,
    namedFds: input.carriesFds ? namedFds : undefined,
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
    // A socket that never reads never learns of the peer's end: it goes once our side is sent.
    close: () => (input.carriesFds ? socket.end(() => socket.destroy()) : socket.end()),
    abort: () => socket.destroy(),
    pauseInput: () => input.pause(),
    resumeInput: () => input.resume(),
  };
}

/** How a connection starts: with what it sent while it waited for an exclusive monitor. */
interface AttachOptions {
  held?: Array<{ chunk: Buffer; fds: number[] }>;
  /** It shut its sending side while it waited. */
  ended?: boolean;
  /** The listener's clients with a session, which a yank drops; this one is among them until it closes. */
  served?: Set<net.Socket>;
  onClose?: () => void;
  /** The monitor's named descriptors (unix). */
  namedFds?: NamedFds;
}

function attach(socket: net.Socket, description: string, host: TransportHost, input: ConnectionInput, opts: AttachOptions = {}): void {
  socket.setNoDelay?.(true);
  const session = host.accept(socketConnection(socket, description, host, input, opts.namedFds));
  opts.served?.add(socket);
  // The client shut its sending side: its requests are still answered (allowHalfOpen).
  input.handle({ data: (chunk, fds) => session.feed(chunk, fds), end: () => session.endOfInput() });
  socket.on('drain', () => session.outputDrained());
  socket.on('error', (err) => host.log.debug({ err, client: description }, 'client socket error'));
  socket.on('close', () => {
    opts.served?.delete(socket);
    session.closedByPeer();
    opts.onClose?.();
  });
  // Bytes never come on the turn that attaches the listeners, so these are first, in order.
  for (const { chunk, fds } of opts.held ?? []) session.feed(chunk, fds);
  if (opts.ended) session.endOfInput();
}

interface ExclusiveMonitor {
  queue: ExclusiveQueue;
  served: Set<net.Socket>;
  where: () => string;
  namedFds?: NamedFds;
}

/**
 * A connection to an exclusive monitor (see exclusive.ts): served at once if the monitor is free,
 * else held un-greeted until its turn, else closed.
 */
function queueOrAttach(socket: net.Socket, description: string, host: TransportHost, input: ConnectionInput, monitor: ExclusiveMonitor): void {
  const { queue, served } = monitor;
  const held: Array<{ chunk: Buffer; fds: number[] }> = [];
  let heldBytes = 0;
  let heldFds = 0;
  let ended = false;
  let pausedHere = false;
  // Its bytes are read (kept, never lexed) only so that a client that gives up is noticed.
  const hold = (chunk: Buffer, fds: number[]): void => {
    held.push({ chunk, fds });
    heldBytes += chunk.length;
    heldFds += fds.length;
    if ((heldBytes >= MAX_HELD_BYTES || heldFds >= MAX_HELD_FDS) && !pausedHere) {
      pausedHere = true;
      input.pause();
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
  const onClose = (): void => {
    for (const { fds } of held) fds.forEach(closeFd);
    queue.leave(turn);
  };
  const turn: Turn = {
    start: () => {
      socket.off('error', onError).off('close', onClose);
      // Before the session exists, so that its own flow control (it may pause input) decides from here on.
      if (pausedHere) input.resume();
      attach(socket, description, host, input, { held, ended, served, onClose: () => queue.leave(turn), namedFds: monitor.namedFds });
    },
    // QEMU's kernel backlog would refuse this connection; Node has accepted it: close it.
    refuse: () => socket.destroy(),
  };
  const outcome = queue.arrive(turn);
  if (outcome === 'waiting') {
    input.handle({ data: hold, end: onEnd });
    socket.on('error', onError).on('close', onClose);
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
  const namedFds = spec.kind === 'unix' ? new NamedFds() : undefined;
  // A unix connection is born paused and never resumed: the native reader reads it.
  const server = net.createServer({ pauseOnConnect: spec.kind === 'unix', allowHalfOpen: true }, (socket) => {
    const peer = spec.kind === 'unix' ? `unix:${spec.path}` : `tcp:${socket.remoteAddress}:${socket.remotePort}`;
    const input = spec.kind === 'unix' ? unixInput(socket, peer, host) : socketInput(socket);
    if (queue) queueOrAttach(socket, peer, host, input, { queue, served, where: () => where, namedFds });
    else attach(socket, peer, host, input, { served, namedFds });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  // A socket bound and listening already, inherited (QEMU's -chardev socket,fd=N, as libvirt
  // passes its monitor): its file is its creator's, neither replaced nor removed here.
  const inherited = spec.kind === 'unix' && spec.fd !== undefined;
  if (spec.kind === 'unix' && spec.fd !== undefined) {
    await listen(server, { fd: spec.fd });
  } else if (spec.kind === 'unix') {
    try {
      unlinkSync(spec.path);
    } catch {
      /* nothing there: fine */
    }
    const old = process.umask(0o177); // the socket is born 0600; no window where others may connect
    try {
      await listen(server, { path: spec.path }, { unix: spec.path });
    } finally {
      process.umask(old);
    }
    chmodSync(spec.path, 0o600);
  } else {
    // No host: every interface, as QEMU's tcp::PORT (Node binds them all when given none).
    await listen(server, spec.host ? { host: spec.host, port: spec.port } : { port: spec.port }, { tcp: true });
  }
  const addr = server.address();
  where = spec.kind === 'unix' ? `unix:${inherited ? String(addr) : spec.path}` : `tcp:${(addr as net.AddressInfo).address}:${(addr as net.AddressInfo).port}`;
  return {
    where,
    dropClients: () => served.forEach((s) => s.destroy()),
    async close() {
      for (const s of sockets) s.destroy();
      namedFds?.closeAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (spec.kind === 'unix' && !inherited) {
        try {
          unlinkSync(spec.path);
        } catch {
          /* already gone */
        }
      }
    },
  };
}

/** Listens; a failure says why as QEMU does (`at`), where the socket is ours to bind. */
function listen(server: net.Server, options: net.ListenOptions | { fd: number }, at?: Parameters<typeof listenFailure>[1]): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (err: Error): void => reject(at ? new Error(listenFailure(err, at)) : err);
    server.once('error', failed);
    server.listen(options, () => {
      server.off('error', failed);
      resolve();
    });
  });
}

function connectOut(spec: Extract<QmpSpec, { kind: 'unix' | 'tcp' }>, host: TransportHost): Promise<Transport> {
  return new Promise((resolve, reject) => {
    const options = spec.kind === 'unix' ? { path: spec.path } : { host: spec.host, port: spec.port };
    const where = spec.kind === 'unix' ? `unix:${spec.path}` : `tcp:${spec.host}:${spec.port}`;
    const socket = net.connect({ ...options, allowHalfOpen: true });
    // Paused before it connects, a socket starts no read of its own: the native reader reads it.
    if (spec.kind === 'unix') socket.pause();
    socket.once('error', (err) => reject(new Error(`Failed to connect to '${where}': ${err.message}`)));
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      const namedFds = spec.kind === 'unix' ? new NamedFds() : undefined;
      attach(socket, where, host, spec.kind === 'unix' ? unixInput(socket, where, host) : socketInput(socket), { namedFds });
      const close = async (): Promise<void> => {
        socket.destroy();
        namedFds?.closeAll();
      };
      resolve({ where: `${where} (client)`, dropClients: () => socket.destroy(), close });
    });
  });
}
