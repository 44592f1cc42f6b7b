/**
 * QMP over WebSocket: one JSON message per text frame each way, the protocol otherwise the same
 * (greeting, negotiation, framing rules: a frame's bytes go through the same JSON streamer).
 */
import { WebSocketServer, type WebSocket } from 'ws';
import type { Connection } from '../session.js';
import { MAX_OUTPUT_BUFFER } from './stream.js';
import type { Transport, TransportHost } from './transport.js';
import type { QmpSpec } from './spec.js';

export async function openWebSocketTransport(spec: Extract<QmpSpec, { kind: 'ws' }>, host: TransportHost): Promise<Transport> {
  // maxPayload matches the JSON streamer's own limit on a message's token text.
  const wss = new WebSocketServer({ host: spec.host, port: spec.port, maxPayload: 64 * 1024 * 1024 + 4096 });
  await new Promise<void>((resolve, reject) => {
    wss.once('error', reject);
    wss.once('listening', () => {
      wss.off('error', reject);
      resolve();
    });
  });
  wss.on('connection', (ws: WebSocket, req) => {
    const description = `ws:${req.socket.remoteAddress}:${req.socket.remotePort}`;
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
    ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
      const bytes = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
      delivered = req.socket.bytesRead;
      session.feed(bytes);
    });
    ws.on('error', (err) => host.log.debug({ err, client: description }, 'websocket error'));
    ws.on('close', () => session.closedByPeer());
    req.socket.on('drain', () => session.outputDrained());
  });
  const addr = wss.address() as { address: string; port: number };
  const where = `ws:${addr.address}:${addr.port}`;
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
