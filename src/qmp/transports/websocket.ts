/**
 * QMP over WebSocket: one JSON message per text frame each way, the protocol otherwise the same
 * (greeting, negotiation, framing rules: a frame's bytes go through the same JSON streamer).
 *
 * A browser lets any page it shows open a WebSocket to any address, loopback included, and only
 * tells the server which page asks: the handshake's Origin header. So a monitor refuses (403) a
 * handshake whose Origin is not one of its `origin=` values, lest any web page open in a browser
 * on this machine run commands here. Clients that are not browsers send no Origin and are served.
 */
import type { IncomingMessage } from 'node:http';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import type { Connection } from '../session.js';
import { ExclusiveQueue, MAX_HELD_BYTES, MAX_WAITING, type Turn } from './exclusive.js';
import { MAX_OUTPUT_BUFFER } from './stream.js';
import type { Transport, TransportHost } from './transport.js';
import type { QmpSpec } from './spec.js';

export async function openWebSocketTransport(spec: Extract<QmpSpec, { kind: 'ws' }>, host: TransportHost): Promise<Transport> {
  let where = '';
  const allowed = new Set(spec.origins);
  const wss = new WebSocketServer({
    host: spec.host,
    port: spec.port,
    // maxPayload matches the JSON streamer's own limit on a message's token text.
    maxPayload: 64 * 1024 * 1024 + 4096,
    verifyClient: ({ req }: { req: IncomingMessage }, done: (ok: boolean, code?: number) => void) => {
      const origin = handshakeOrigin(req);
      if (origin === undefined || allowed.has(origin)) return done(true);
      host.log.warn(
        { origin, qmp: where, client: `ws:${req.socket.remoteAddress}:${req.socket.remotePort}` },
        `refused a WebSocket handshake from origin ${origin} on ${where}: not one of its origin= values`,
      );
      done(false, 403);
    },
  });
  await new Promise<void>((resolve, reject) => {
    wss.once('error', reject);
    wss.once('listening', () => {
      wss.off('error', reject);
      resolve();
    });
  });
  const queue = spec.exclusive ? new ExclusiveQueue() : undefined;
  wss.on('connection', (ws: WebSocket, req: IncomingMessage) => {
    const description = `ws:${req.socket.remoteAddress}:${req.socket.remotePort}`;
    if (queue) queueOrServe(ws, req, description, host, queue, where);
    else serve(ws, req, description, host);
  });
  const addr = wss.address() as { address: string; port: number };
  where = `ws:${addr.address}:${addr.port}`;
  return {
    where,
    dropClients: () => wss.clients.forEach((c) => c.terminate()),
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of wss.clients) c.terminate();
        wss.close(() => resolve());
      }),
  };
}

/**
 * The Origin header as sent (Sec-WebSocket-Origin in the hybi-08 handshake), compared as is:
 * browsers serialize it exactly as the origin= values are normalised. Two of them arrive joined
 * by a comma, which matches nothing.
 */
function handshakeOrigin(req: IncomingMessage): string | undefined {
  const value = req.headers.origin ?? req.headers['sec-websocket-origin'];
  return Array.isArray(value) ? value.join(', ') : value;
}

function toBuffer(data: RawData): Buffer {
  return Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
}

/** A client's session, fed first with what it sent while it waited for an exclusive monitor. */
function serve(ws: WebSocket, req: IncomingMessage, description: string, host: TransportHost, held: Buffer[] = [], onClose?: () => void): void {
  // ws gathers a whole frame before it hands it over: count what it holds meanwhile.
  let delivered = 0;
  const conn: Connection = {
    description,
    get queuedOutput() {
      return ws.bufferedAmount;
    },
    get queuedInput() {
      return Math.max(0, req.socket.bytesRead - delivered);
    },
    send(text) {
      if (ws.readyState !== ws.OPEN) return;
      if (ws.bufferedAmount > MAX_OUTPUT_BUFFER) {
        host.log.warn({ client: description }, 'client is not reading its replies; disconnecting it');
        ws.terminate();
        return;
      }
      ws.send(text);
    },
    close: () => ws.close(),
    abort: () => ws.terminate(),
    pauseInput: () => ws.pause(),
    resumeInput: () => ws.resume(),
  };
  const session = host.accept(conn);
  ws.on('message', (data: RawData) => {
    delivered = req.socket.bytesRead;
    session.feed(toBuffer(data));
  });
  ws.on('error', (err) => host.log.debug({ err, client: description }, 'websocket error'));
  ws.on('close', () => {
    session.closedByPeer();
    onClose?.();
  });
  req.socket.on('drain', () => session.outputDrained());
  // Messages never come on the turn that adds the listener, so these are first, in order.
  for (const bytes of held) session.feed(bytes);
}

/**
 * A client of an exclusive monitor (see exclusive.ts): served at once if the monitor is free,
 * else kept un-greeted until its turn (its handshake is done: as with QEMU, its connection
 * succeeds and then nothing comes), else closed.
 */
function queueOrServe(ws: WebSocket, req: IncomingMessage, description: string, host: TransportHost, queue: ExclusiveQueue, where: string): void {
  const held: Buffer[] = [];
  let heldBytes = 0;
  let pausedHere = false;
  // Its messages are taken (kept, never lexed) only so that a client that gives up is noticed.
  const hold = (data: RawData): void => {
    const bytes = toBuffer(data);
    held.push(bytes);
    heldBytes += bytes.length;
    if (heldBytes >= MAX_HELD_BYTES && !pausedHere) {
      pausedHere = true;
      ws.pause();
    }
  };
  const onError = (err: Error): void => host.log.debug({ err, client: description }, 'waiting websocket error');
  const onClose = (): void => queue.leave(turn);
  const turn: Turn = {
    start: () => {
      ws.off('message', hold).off('error', onError).off('close', onClose);
      // Before the session exists, so that its own flow control decides from here on.
      if (pausedHere) ws.resume();
      serve(ws, req, description, host, held, () => queue.leave(turn));
    },
    // QEMU's kernel backlog would refuse this connection; it is accepted already: close it, saying why.
    refuse: () => ws.close(1013, 'the monitor is in use'),
  };
  const outcome = queue.arrive(turn);
  if (outcome === 'waiting') {
    ws.on('message', hold).on('error', onError).on('close', onClose);
    host.log.info({ client: description, qmp: where }, 'client waits: the exclusive monitor is in use');
  } else if (outcome === 'refused') {
    ws.on('error', onError);
    host.log.warn({ client: description, qmp: where, waiting: MAX_WAITING }, 'client refused: the exclusive monitor is in use and its queue is full');
  }
}
