/**
 * Small helpers the benchmarks share: statistics, peak RSS from /proc, the machine description
 * for results.json, and SHA-256 of RAM images.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import os from 'node:os';

export const MiB = 1 << 20;
export const GiB = 1 << 30;
export const PAGE = 4096;
export const QEMU = 'qemu-system-x86_64';

/** `p`, or a rejection after `ms` (the benchmark must not hang on a daemon that stopped answering). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Runs one benchmark. If it throws, says "<what> could not run: <reason>", makes the whole run
 * exit 1, and gives the reason instead of a value: the other benchmarks still run.
 */
export async function attempt<T>(what: string, run: () => T | Promise<T>): Promise<{ value: T } | { error: string }> {
  try {
    return { value: await run() };
  } catch (err) {
    const error = (err as Error).message;
    console.log(`${what} could not run: ${error}`);
    process.exitCode = 1;
    return { error };
  }
}

/** Polls `probe` every `everyMs` (0: back to back) until `done`; throws after `timeoutMs`. */
export async function until<T>(
  what: string,
  probe: () => Promise<T>,
  done: (v: T) => boolean,
  { everyMs = 10, timeoutMs = 15_000 }: { everyMs?: number; timeoutMs?: number } = {},
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (done(v)) return v;
    if (performance.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(v)})`);
    if (everyMs > 0) await sleep(everyMs);
  }
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export interface Quantiles {
  samples: number;
  p50: number;
  p99: number;
  max: number;
}

/** p50/p99/max of round trips (ms), as the earlier benchmarks computed them (nearest rank). */
export function quantiles(values: number[]): Quantiles | undefined {
  if (values.length === 0) return undefined;
  const s = [...values].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return { samples: s.length, p50: q(0.5), p99: q(0.99), max: s.at(-1)! };
}

/** The process's peak resident set (VmHWM, bytes), or undefined once it has gone. */
export function peakRss(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** CPU time (user + system, ms) the process has used so far, all threads; undefined once gone. */
export function cpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return ((Number(rest[11]) + Number(rest[12])) * 1000) / 100; // USER_HZ is 100 on Linux
  } catch {
    return undefined;
  }
}

export function qemuVersion(): string | undefined {
  const r = spawnSync(QEMU, ['--version'], { encoding: 'utf8' });
  if (r.status !== 0 || !r.stdout) return undefined;
  return r.stdout.split('\n')[0]!.trim();
}

export interface Machine {
  date: string;
  node: string;
  cpu: string;
  cores: number;
  qemu: string | null;
  kernel: string;
  /** 1-minute load average when the benchmarks started. */
  loadAverage1m: number;
}

export function machine(): Machine {
  let cpu = 'unknown';
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) cpu = m[1]!.trim();
  } catch {
    /* not Linux */
  }
  return {
    date: new Date().toISOString(),
    node: process.version,
    cpu,
    cores: os.availableParallelism(),
    qemu: qemuVersion() ?? null,
    kernel: `${os.type()} ${os.release()}`,
    loadAverage1m: os.loadavg()[0]!,
  };
}

function cpuTimes(): { busy: number; total: number } | undefined {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return undefined;
  }
}

/** CPU time (ms) of this process and of its children that have been waited for (all of ours are). */
function ownTreeCpuMs(): number | undefined {
  try {
    const f = readFileSync('/proc/self/stat', 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return ((Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14])) * 1000) / 100;
  } catch {
    return undefined;
  }
}

/**
 * Measures how much CPU other processes (not this one nor its children) take from now until
 * the returned function is called: the share (0..1) of all CPUs' time.
 */
export function otherCpuMeter(): () => number | undefined {
  const a = cpuTimes();
  const own0 = ownTreeCpuMs();
  return () => {
    const b = cpuTimes();
    const own1 = ownTreeCpuMs();
    if (!a || !b || own0 === undefined || own1 === undefined || b.total === a.total) return undefined;
    const busyMs = ((b.busy - a.busy) * 1000) / 100;
    const totalMs = ((b.total - a.total) * 1000) / 100;
    return Math.max(0, (busyMs - (own1 - own0)) / totalMs);
  };
}

/**
 * The share (0..1) of all CPUs busy over the next `ms` while this process waits: what other
 * work on the machine takes from the benchmarks. Undefined where /proc/stat is missing.
 */
export async function cpuBusy(ms = 1000): Promise<number | undefined> {
  const a = cpuTimes();
  await sleep(ms);
  const b = cpuTimes();
  if (!a || !b || b.total === a.total) return undefined;
  return (b.busy - a.busy) / (b.total - a.total);
}

/** SHA-256 (hex) of a file. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** SHA-256 (hex) of `size` zero bytes. */
export function sha256Zeros(size: number): string {
  const h = createHash('sha256');
  const z = Buffer.alloc(Math.min(size, 4 * MiB));
  for (let done = 0; done < size; done += z.length) h.update(done + z.length <= size ? z : z.subarray(0, size - done));
  return h.digest('hex');
}

/** A directory in RAM for throw-away dumps where there is one (/dev/shm), else undefined. */
export function ramDir(): string | undefined {
  return existsSync('/dev/shm') ? '/dev/shm' : undefined;
}

export const fmt = (v: number | undefined, digits = 1): string => (v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(digits));
export const mib = (bytes: number | undefined, digits = 0): string => (bytes === undefined ? '-' : (bytes / MiB).toFixed(digits));

/** Prints a markdown table. */
export function table(header: string[], rows: string[][]): void {
  console.log(`| ${header.join(' | ')} |`);
  console.log(`|${header.map(() => '---').join('|')}|`);
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
}

/** A progress line on stderr (the tables go to stdout). */
export function progress(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}
