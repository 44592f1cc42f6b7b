/**
 * Starts the built qmigd binary as a real process in a temporary directory and finds its
 * monitors from its log ("QMP listening"), so tests drive exactly what users run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const REPO = resolve(import.meta.dirname, '..', '..', '..');
export const BIN = join(REPO, 'bin', 'qmigd');

export interface RunningDaemon {
  proc: ChildProcess;
  dir: string;
  /** Each listener's address as logged: unix:PATH, tcp:HOST:PORT, ws:HOST:PORT. */
  listening: string[];
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop: () => Promise<void>;
}

/** Every temporary directory a test file made goes when its process ends (RAM images are large). */
const made: string[] = [];
process.on('exit', () => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'qmigd-test-'));
  made.push(dir);
  return dir;
}

export { freePort } from '../../src/cli/migration-pair.js';

/** Runs qmigd with `args` (plus a unix monitor in a temp dir unless `qmp` is given). */
export async function startDaemon(
  args: string[] = [],
  opts: { qmp?: string[]; env?: NodeJS.ProcessEnv; fd3?: number; nodeArgs?: string[] } = {},
): Promise<RunningDaemon> {
  const dir = tempDir();
  const qmp = opts.qmp ?? [`unix:${join(dir, 'qmp.sock')},server=on,wait=off`];
  // A test that names no release was written against QEMU 7.2, which it gets;
  // QMIGD_TEST_QEMU_VERSION runs it as another release, to see what of it holds there.
  const release = args.includes('--qemu-version') ? [] : ['--qemu-version', process.env.QMIGD_TEST_QEMU_VERSION ?? '7.2'];
  const proc = spawn(process.execPath, [...(opts.nodeArgs ?? []), BIN, ...qmp.flatMap((q) => ['--qmp', q]), '--log-level', 'info', ...release, ...args], {
    cwd: dir,
    env: { ...process.env, QMIGD_VALIDATE: '1', ...opts.env },
    // fd3: a descriptor the daemon inherits as 3 (for fd: migration URIs).
    stdio: ['ignore', 'ignore', 'pipe', ...(opts.fd3 !== undefined ? [opts.fd3] : [])],
  });
  let err = '';
  const listening: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    proc.on('exit', (code, signal) => res({ code, signal })),
  );
  await new Promise<void>((res, rej) => {
    let partial = '';
    proc.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      // Whole lines only: a log line may arrive split across two chunks.
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        if (!line.includes('"msg":"QMP listening"')) continue;
        const m = /"qmp":"([^"]+)"/.exec(line);
        if (m) listening.push(m[1]!);
      }
      if (listening.length === qmp.length) res();
    });
    void exited.then(({ code }) => rej(new Error(`qmigd exited with ${code} before listening: ${err}`)));
  });
  return {
    proc, dir, listening, exited,
    stderr: () => err,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Threads of a process (Linux). */
export function threads(pid: number): number {
  return readdirSync(`/proc/${pid}/task`).length;
}

/** Resolves once `pid`'s threads have stayed the same for 300 ms (a thread it boots is counted). */
export async function threadsSettled(pid: number): Promise<number> {
  for (let last = -1, same = 0; ; ) {
    await new Promise((r) => setTimeout(r, 100));
    const now = threads(pid);
    same = now === last ? same + 1 : 0;
    last = now;
    if (same === 3) return now;
  }
}

/** The fields of the first log line (pino's JSON, on stderr) whose message is `msg`; undefined where there is none. */
export function logLine(log: string, msg: string): Record<string, unknown> | undefined {
  const line = log.split('\n').find((l) => l.includes(`"msg":${JSON.stringify(msg)}`));
  return line === undefined ? undefined : (JSON.parse(line) as Record<string, unknown>);
}

/**
 * The pages a destination's load thread loaded (--page-thread on), from the log line its incoming
 * migration completed with: undefined where no load thread took part.
 */
export function loadThreadPages(log: string): number | undefined {
  const done = logLine(log, 'incoming migration completed');
  if (done === undefined) throw new Error('the log has no "incoming migration completed" line');
  return done.loadThreadPages as number | undefined;
}

/** Resident memory of a process in KiB, from /proc. */
export function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

/** The socket path of a unix: listener. */
export function unixPath(d: RunningDaemon, index = 0): string {
  return d.listening[index]!.replace(/^unix:/, '');
}
