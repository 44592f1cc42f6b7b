/**
 * The live memory of a daemon, read through Node's inspector: a full garbage collection first,
 * then process.memoryUsage() inside the daemon. Unlike RSS, this does not depend on when V8
 * chooses to collect, so a test can hold a daemon to "nothing kept" with a tight bound.
 * The daemon must run with `nodeArgs: INSPECT` (loopback, a port the kernel picks).
 */
import WebSocket from 'ws';
import type { RunningDaemon } from './daemon.js';

export const INSPECT = ['--inspect=127.0.0.1:0'];

export interface LiveMemory {
  /** JavaScript objects still reachable. */
  heapUsed: number;
  /** Memory outside the heap held by reachable objects (Buffers, ArrayBuffers). */
  external: number;
}

export async function liveMemory(d: RunningDaemon): Promise<LiveMemory> {
  const url = /Debugger listening on (ws:\/\/\S+)/.exec(d.stderr())?.[1];
  if (url === undefined) throw new Error('the daemon was not started with INSPECT');
  const ws = new WebSocket(url);
  await new Promise((res, rej) => ws.once('open', res).once('error', rej));
  let next = 0;
  const call = (method: string, params: object = {}): Promise<Record<string, unknown>> =>
    new Promise((res, rej) => {
      const id = ++next;
      const onMessage = (data: Buffer): void => {
        const reply = JSON.parse(data.toString()) as { id?: number; result?: Record<string, unknown>; error?: unknown };
        if (reply.id !== id) return;
        ws.off('message', onMessage);
        if (reply.error === undefined) res(reply.result!);
        else rej(new Error(`${method}: ${JSON.stringify(reply.error)}`));
      };
      ws.on('message', onMessage);
      ws.send(JSON.stringify({ id, method, params }));
    });
  try {
    await call('HeapProfiler.collectGarbage');
    const { result } = (await call('Runtime.evaluate', {
      expression: 'JSON.stringify(process.memoryUsage())',
      returnByValue: true,
    })) as { result: { value: string } };
    const usage = JSON.parse(result.value) as LiveMemory;
    return { heapUsed: usage.heapUsed, external: usage.external };
  } finally {
    ws.close();
  }
}
