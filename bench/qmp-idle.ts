/**
 * QMP round-trip latency against an idle daemon: 20,000 query-status, one in flight, over a
 * unix socket with a bare client (no JSON parsing of replies). Prints nothing; returns the numbers.
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { makeTempDir, QMIGD_BIN } from '../src/cli/migration-pair.js';
import { quantiles, sleep, type Quantiles } from './common.js';

export const IDLE_SAMPLES = 20_000;

export async function idleQmpBench(): Promise<Quantiles> {
  const dir = makeTempDir('qmigd-bench-qmp-');
  const sock = join(dir, 'q.sock');
  const proc = spawn(process.execPath, [QMIGD_BIN, '--qmp', `unix:${sock},server=on,wait=off`, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let tail = '';
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (d: string) => (tail = (tail + d).slice(-4096)));
  const exited = new Promise((r) => proc.on('exit', r));
  let s: net.Socket | undefined;
  try {
    for (let i = 0; ; i++) {
      try {
        s = await new Promise<net.Socket>((res, rej) => {
          const c = net.connect(sock);
          c.once('connect', () => res(c)).once('error', rej);
        });
        break;
      } catch {
        if (i >= 200 || proc.exitCode !== null) throw new Error(`qmigd did not listen: ${tail.trim()}`);
        await sleep(50);
      }
    }
    const socket = s;
    let buf = '';
    let waiter: (() => void) | undefined;
    socket.on('data', (d) => {
      buf += d.toString();
      waiter?.();
    });
    const nextLine = async (): Promise<string> => {
      for (;;) {
        const i = buf.indexOf('\r\n');
        if (i >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 2);
          return line;
        }
        await new Promise<void>((r) => (waiter = r));
      }
    };
    await nextLine();
    socket.write('{"execute":"qmp_capabilities"}');
    await nextLine();
    const samples: number[] = [];
    for (let i = 0; i < IDLE_SAMPLES; i++) {
      const t0 = process.hrtime.bigint();
      socket.write('{"execute":"query-status"}');
      await nextLine();
      samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    return quantiles(samples)!;
  } finally {
    s?.destroy();
    proc.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}
