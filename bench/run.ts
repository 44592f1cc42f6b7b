/**
 * `npm run bench`: QMP round-trip latency against a running daemon (the migration benchmarks
 * join it with the migration engine). Prints numbers; never passes or fails on time.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { coloBench } from './colo.js';
import { migrationBench } from './migration.js';

const BIN = resolve(import.meta.dirname, '..', '..', 'bin', 'qmigd');

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'qmigd-bench-'));
  const sock = join(dir, 'q.sock');
  const proc = spawn(process.execPath, [BIN, '--qmp', `unix:${sock},server=on,wait=off`, '--log-level', 'warn'], { stdio: 'inherit' });
  for (let i = 0; i < 100; i++) {
    try {
      await new Promise<void>((res, rej) => net.connect(sock).once('connect', function (this: net.Socket) { this.destroy(); res(); }).once('error', rej));
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const s = net.connect(sock);
  let buf = '';
  let waiter: (() => void) | undefined;
  s.on('data', (d) => {
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
  s.write('{"execute":"qmp_capabilities"}');
  await nextLine();
  const samples: number[] = [];
  for (let i = 0; i < 20000; i++) {
    const t0 = process.hrtime.bigint();
    s.write('{"execute":"query-status"}');
    await nextLine();
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  samples.sort((a, b) => a - b);
  const q = (p: number): string => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))]!.toFixed(3);
  console.log('| benchmark | p50 ms | p99 ms | max ms |');
  console.log('|---|---|---|---|');
  console.log(`| QMP query-status round trip, idle daemon (20,000) | ${q(0.5)} | ${q(0.99)} | ${samples.at(-1)!.toFixed(3)} |`);
  s.destroy();
  proc.kill('SIGTERM');
  await new Promise((r) => proc.on('exit', r));
  rmSync(dir, { recursive: true, force: true });
}

await main();
await migrationBench();
await coloBench();
