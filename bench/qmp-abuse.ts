/**
 * What hostile or careless QMP clients cost the daemon, measured from outside: each scenario
 * starts a fresh daemon, runs the abuse, and meanwhile a probe client sends a command every
 * 20 ms (one in flight) and times the answers. Reported per scenario: whether the daemon
 * survived, its peak RSS above its RSS before the abuse, the probe's p50 / p99 / max, and what
 * the scenario itself measures.
 *
 *   unfinished-4MiB x24   24 connections each send `[` then `1,` a million times, and wait
 *   complete-4MiB x5      one connection sends a complete 4 MiB array, five times
 *   big-63MiB x12         12 connections each send a 63 MiB message
 *   pipelined-schema      2,000 query-qmp-schema in one write, while the daemon migrates its
 *                         guest (the probe asks query-migrate, so it also sees the migration move)
 *
 * `node dist/bench/qmp-abuse.js [--bin PATH]` runs it against another build of qmigd (an older
 * commit, for before/after figures); `npm run bench` runs it against this one.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { freePort, makeTempDir, QMIGD_BIN, writeRandomFile } from '../src/cli/migration-pair.js';
import { fmt, MiB, quantiles, sleep, table, type Quantiles } from './common.js';

const PROBE = new URL('./qmp-probe.js', import.meta.url).pathname;

export interface AbuseResult {
  scenario: string;
  survived: boolean;
  /** Seconds after the abuse began at which the daemon died. */
  diedAfterS?: number;
  peakRssOverBaselineMiB: number;
  probe?: Quantiles;
  /** Unanswered probes when the scenario ended (a daemon that stopped answering). */
  probeStuckMs?: number;
  note: string;
}

interface Daemon {
  proc: ChildProcess;
  socket: string;
  dir: string;
  log: () => string;
  exitedAt?: number;
  stop: () => Promise<void>;
}

async function startDaemon(bin: string, args: string[] = [], dir = makeTempDir('qmigd-abuse-')): Promise<Daemon> {
  const socket = join(dir, 'q.sock');
  // QMIGD_BENCH_NODE_ARGS: flags for the daemons' node (--cpu-prof, say), to see where time goes.
  const nodeArgs = process.env.QMIGD_BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const proc = spawn(process.execPath, [...nodeArgs, bin, '--qmp', `unix:${socket},server=on,wait=off`, '--log-level', 'warn', ...args], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (d: string) => (log = (log + d).slice(-65536)));
  const d: Daemon = {
    proc, socket, dir,
    log: () => log,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        if (!(await Promise.race([exited.then(() => true), sleep(3000).then(() => false)]))) proc.kill('SIGKILL');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  proc.on('exit', () => (d.exitedAt = performance.now()));
  for (let i = 0; ; i++) {
    try {
      (await connect(socket)).destroy();
      return d;
    } catch {
      if (i > 200 || proc.exitCode !== null) throw new Error(`qmigd did not listen: ${log}`);
      await sleep(25);
    }
  }
}

function connect(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    s.once('connect', () => resolve(s)).once('error', reject);
  });
}

/**
 * The probe runs in a process of its own (qmp-probe.ts), so that what it measures is the daemon,
 * not this process building and sending megabytes.
 */
class Probe {
  private output = '';
  private readonly exited: Promise<void>;

  private constructor(private readonly proc: ChildProcess) {
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (d: string) => (this.output += d));
    this.exited = new Promise((r) => proc.once('exit', () => r()));
  }

  static async start(path: string, command: string): Promise<Probe> {
    const proc = spawn(process.execPath, [PROBE, path, command], { stdio: ['pipe', 'pipe', 'inherit'] });
    const p = new Probe(proc);
    // It says "ready" once negotiated and probing.
    while (!p.output.includes('ready\n')) {
      if (proc.exitCode !== null) throw new Error('the probe could not connect');
      await sleep(10);
    }
    return p;
  }

  /** Stops it; its samples, and how long an unanswered request had waited, if one had. */
  async stop(): Promise<{ samples: number[]; stuckMs?: number }> {
    this.proc.stdin!.end();
    await this.exited;
    return JSON.parse(this.output.slice(this.output.indexOf('ready\n') + 6)) as { samples: number[]; stuckMs?: number };
  }
}

function rssKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number | undefined {
  try {
    return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
  } catch {
    return undefined;
  }
}

/** Runs `abuse` against a fresh daemon with a probe beside it; the peak RSS is sampled throughout. */
async function runScenario(
  name: string,
  bin: string,
  abuse: (d: Daemon) => Promise<string>,
  opts: { args?: string[]; probe?: string; prepare?: (dir: string) => Promise<void>; setup?: (d: Daemon) => Promise<() => Promise<void>> } = {},
): Promise<AbuseResult> {
  const dir = makeTempDir('qmigd-abuse-');
  await opts.prepare?.(dir);
  const d = await startDaemon(bin, opts.args, dir);
  const cleanup = opts.setup ? await opts.setup(d) : async () => undefined;
  try {
    await sleep(300);
    const pid = d.proc.pid!;
    const baseline = rssKiB(pid, 'VmRSS')!;
    let peak = baseline;
    const sampler = setInterval(() => {
      const hwm = rssKiB(pid, 'VmHWM');
      if (hwm !== undefined) peak = Math.max(peak, hwm);
    }, 50);
    const probe = await Probe.start(d.socket, opts.probe ?? 'query-status');
    const began = performance.now();
    let note: string;
    try {
      note = await abuse(d);
    } catch (err) {
      note = `abuse ended: ${(err as Error).message}`;
    }
    await sleep(500);
    const { samples, stuckMs: stuck } = await probe.stop();
    clearInterval(sampler);
    const survived = d.proc.exitCode === null && d.proc.signalCode === null;
    const died = d.exitedAt !== undefined ? (d.exitedAt - began) / 1000 : undefined;
    const heap = /JavaScript heap out of memory|Allocation failed/.test(d.log()) ? ' (JavaScript heap out of memory)' : '';
    return {
      scenario: name,
      survived,
      diedAfterS: died,
      peakRssOverBaselineMiB: (peak - baseline) / 1024,
      probe: quantiles(samples),
      probeStuckMs: stuck,
      note: survived ? note : `died after ${fmt(died)} s${heap}; ${note}`,
    };
  } finally {
    await cleanup();
    await d.stop();
  }
}

/** Writes `bytes` on a new connection and leaves it open; resolves once written (or refused). */
async function sendOn(path: string, bytes: Buffer[]): Promise<net.Socket> {
  const s = await connect(path);
  s.on('error', () => undefined);
  s.on('data', () => undefined); // read and discard the greeting and replies
  for (const b of bytes) {
    if (s.destroyed) break;
    if (!s.write(b)) await new Promise((r) => { s.once('drain', r); s.once('close', r); });
  }
  return s;
}

/** `[` then `1,` n times, in pieces of `piece` bytes. */
function unfinishedArray(n: number, piece = 1 << 20): Buffer[] {
  const body = Buffer.from('1,'.repeat(piece / 2));
  const out = [Buffer.from('[')];
  for (let left = n * 2; left > 0; left -= body.length) out.push(left >= body.length ? body : body.subarray(0, left));
  return out;
}

export async function abuseBench(bin = QMIGD_BIN, log: (line: string) => void = () => undefined, only?: string): Promise<AbuseResult[]> {
  const results: AbuseResult[] = [];
  const scenario = (name: string, ...rest: Parameters<typeof runScenario> extends [string, ...infer R] ? R : never): Promise<AbuseResult | undefined> =>
    only && !name.startsWith(only) ? Promise.resolve(undefined) : runScenario(name, ...rest);
  const run = async (r: Promise<AbuseResult | undefined>): Promise<void> => {
    const result = await r;
    if (!result) return;
    log(`${result.scenario}: ${result.survived ? 'survived' : 'DIED'}, peak RSS +${fmt(result.peakRssOverBaselineMiB, 0)} MiB, probe max ${fmt(result.probe?.max)} ms; ${result.note}`);
    results.push(result);
  };

  await run(scenario('unfinished-4MiB x24', bin, async (d) => {
    const sockets = await Promise.all(Array.from({ length: 24 }, () => sendOn(d.socket, unfinishedArray(1_000_000))));
    const open = sockets.filter((s) => !s.destroyed).length;
    await sleep(5000);
    const still = sockets.filter((s) => !s.destroyed).length;
    sockets.forEach((s) => s.destroy());
    return `${open} connections open after sending, ${still} after 5 s more`;
  }));

  await run(scenario('complete-4MiB x5', bin, async (d) => {
    const message = Buffer.concat([...unfinishedArray(1_000_000), Buffer.from('1]\n')]);
    const s = await sendOn(d.socket, []);
    let replies = 0;
    s.on('data', (chunk: Buffer) => (replies += chunk.toString().split('JSON object').length - 1));
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) s.write(message);
    while (replies < 5 && !s.destroyed && performance.now() - t0 < 60_000) await sleep(10);
    s.destroy();
    return `${replies} of 5 answered in ${fmt((performance.now() - t0) / 1000, 2)} s`;
  }));

  await run(scenario('big-63MiB x12', bin, async (d) => {
    const size = 63 * MiB;
    const string = Buffer.alloc(size - 4, 0x61);
    const sockets = await Promise.all(Array.from({ length: 12 }, () => sendOn(d.socket, [Buffer.from('["'), string, Buffer.from('"]\n')])));
    await sleep(3000);
    const dropped = (d.log().match(/holds the most/g) ?? []).length;
    sockets.forEach((s) => s.destroy());
    return `${dropped} connections dropped by the memory budget`;
  }));

  const PAIR_RAM = 256 * MiB;
  await run(scenario('pipelined-schema', bin, async (d) => {
    const s = await sendOn(d.socket, []);
    let buf = '';
    let answered = 0;
    s.on('data', (chunk: Buffer) => {
      buf += chunk.toString('latin1');
      const parts = buf.split('\r\n');
      buf = parts.pop()!;
      answered += parts.filter((l) => l.startsWith('{"return": [')).length;
    });
    s.write('{"execute":"qmp_capabilities"}\n');
    await sleep(200);
    const t0 = performance.now();
    s.write('{"execute":"query-qmp-schema"}\n'.repeat(2000));
    while (answered < 2000 && !s.destroyed && performance.now() - t0 < 120_000) await sleep(10);
    const took = (performance.now() - t0) / 1000;
    s.destroy();
    return `2000 answered in ${fmt(took, 2)} s while migrating`;
  }, {
    args: ['-m', String(PAIR_RAM), '--memory-file', 'ram.img'],
    probe: 'query-migrate',
    prepare: (dir) => writeRandomFile(join(dir, 'ram.img'), PAIR_RAM),
    setup: async (d) => {
      // The daemon migrates its guest to a second one, at 32 MiB/s so it lasts the whole flood.
      const port = await freePort();
      const dst = await startDaemon(bin, ['-m', String(PAIR_RAM), '--incoming', `tcp:127.0.0.1:${port}`]);
      const c = await sendOn(d.socket, [Buffer.from(
        '{"execute":"qmp_capabilities"}\n' +
        '{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":33554432}}\n' +
        `{"execute":"migrate","arguments":{"uri":"tcp:127.0.0.1:${port}"}}\n`)]);
      return async () => {
        c.destroy();
        await dst.stop();
      };
    },
  }));
  return results;
}

export function printAbuse(results: AbuseResult[]): void {
  table(
    ['abuse', 'daemon', 'peak RSS over baseline (MiB)', 'probe p50 / p99 / max (ms)', 'what happened'],
    results.map((r) => [
      r.scenario,
      r.survived ? 'survived' : 'died',
      fmt(r.peakRssOverBaselineMiB, 0),
      r.probe ? `${fmt(r.probe.p50, 2)} / ${fmt(r.probe.p99, 1)} / ${fmt(r.probe.max, 0)}${r.probeStuckMs ? ` (one unanswered for ${fmt(r.probeStuckMs / 1000)} s)` : ''}` : '-',
      r.note,
    ]),
  );
}

// As a script: node dist/bench/qmp-abuse.js [--bin PATH]
if (process.argv[1] && import.meta.filename === process.argv[1]) {
  const at = process.argv.indexOf('--bin');
  const bin = at > 0 ? process.argv[at + 1]! : QMIGD_BIN;
  const only = process.argv.indexOf('--only');
  console.log(`qmigd: ${bin}`);
  printAbuse(await abuseBench(bin, (line) => console.log(line), only > 0 ? process.argv[only + 1] : undefined));
}
