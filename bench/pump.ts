/**
 * The transport's limit: a raw pump of SIZE bytes between two Node processes over TCP on
 * 127.0.0.1, the loopback transport a qmigd migration uses (setNoDelay as qmigd's channels).
 * The sender writes one 1 MiB buffer of random bytes again and again, waiting for 'drain'
 * whenever write() asks it to; the receiver only counts bytes, and times from accepting the
 * connection to the end of the stream.
 *
 * Run by bench/run.ts; each side is `node dist/bench/pump.js recv` / `... send PORT SIZE`.
 */
import { spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import net from 'node:net';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, MiB, peakRss } from './common.js';

const CHUNK = MiB;
const SELF = fileURLToPath(import.meta.url);

export interface PumpRun {
  bytes: number;
  ms: number;
  mibPerSec: number;
  senderPeakRss?: number;
  receiverPeakRss?: number;
}

export interface PumpResult {
  size: number;
  chunk: number;
  runs: PumpRun[];
  /** Median over the runs. */
  mibPerSec: number;
}

function receiver(): void {
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    const t0 = performance.now();
    let bytes = 0;
    socket.on('data', (d: Buffer) => {
      bytes += d.length;
    });
    socket.on('end', () => {
      const ms = performance.now() - t0;
      process.stdout.write(`${JSON.stringify({ bytes, ms, peakRss: peakRss(process.pid) })}\n`);
      socket.end();
      server.close();
    });
  });
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${JSON.stringify({ port: (server.address() as net.AddressInfo).port })}\n`);
  });
}

function sender(port: number, size: number): void {
  const chunk = randomFillSync(Buffer.allocUnsafe(CHUNK));
  const socket = net.connect(port, '127.0.0.1');
  socket.setNoDelay(true);
  socket.on('connect', async () => {
    let sent = 0;
    while (sent < size) {
      const n = Math.min(CHUNK, size - sent);
      const ok = socket.write(n === CHUNK ? chunk : chunk.subarray(0, n));
      sent += n;
      if (!ok) await new Promise((r) => socket.once('drain', r));
    }
    socket.end();
  });
  socket.on('close', () => process.stdout.write(`${JSON.stringify({ peakRss: peakRss(process.pid) })}\n`));
}

/** Spawns `node pump.js ...args`; resolves with each JSON line it prints through `onLine`. */
function child(args: string[], onLine: (msg: Record<string, number>) => void): Promise<void> {
  const p = spawn(process.execPath, [SELF, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let buf = '';
  p.stdout!.setEncoding('utf8');
  p.stdout!.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      onLine(JSON.parse(buf.slice(0, i)) as Record<string, number>);
      buf = buf.slice(i + 1);
    }
  });
  return new Promise((res, rej) => {
    p.on('error', rej);
    p.on('exit', (code, signal) => (code === 0 ? res() : rej(new Error(`pump ${args[0]} exited (${signal ?? code})`))));
  });
}

export async function pumpOnce(size: number): Promise<PumpRun> {
  let portResolve!: (port: number) => void;
  const port = new Promise<number>((r) => (portResolve = r));
  const run: Partial<PumpRun> = {};
  const recv = child(['recv'], (m) => {
    if (m.port !== undefined) portResolve(m.port);
    else {
      run.bytes = m.bytes;
      run.ms = m.ms;
      run.receiverPeakRss = m.peakRss;
    }
  });
  const send = child(['send', String(await port), String(size)], (m) => (run.senderPeakRss = m.peakRss));
  await Promise.all([recv, send]);
  if (run.bytes !== size) throw new Error(`pump: received ${run.bytes} of ${size} bytes`);
  return { ...(run as PumpRun), mibPerSec: size / MiB / (run.ms! / 1000) };
}

export function pumpResult(size: number, runs: PumpRun[]): PumpResult {
  return { size, chunk: CHUNK, runs, mibPerSec: median(runs.map((r) => r.mibPerSec)) };
}

export async function pumpBench(size: number, repeats: number): Promise<PumpResult> {
  const runs: PumpRun[] = [];
  for (let i = 0; i < repeats; i++) runs.push(await pumpOnce(size));
  return pumpResult(size, runs);
}

if (process.argv[1] && resolve(process.argv[1]) === SELF) {
  if (process.argv[2] === 'recv') receiver();
  else if (process.argv[2] === 'send') sender(Number(process.argv[3]), Number(process.argv[4]));
  else {
    const r = await pumpBench(process.argv[2] ? Number(process.argv[2]) : 1 << 30, 3);
    console.log(JSON.stringify(r, null, 2));
  }
}
