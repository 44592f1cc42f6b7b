/**
 * Two real qmigd processes, a migration source and a destination, driven over QMP on unix
 * sockets: what `qmigd demo` and the migration benchmark share. Library code only (no command
 * line parsing); it never imports from test/.
 *
 *   const pair = await MigrationPair.start({ memory: 256 << 20, memoryFile });
 *   await pair.source.qmp.execute('migrate', { uri: pair.uri });
 *   ...
 *   await pair.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** bin/qmigd, from this module compiled to dist/src/cli/. */
export const QMIGD_BIN = fileURLToPath(new URL('../../../bin/qmigd', import.meta.url));

export type QmpMessage = Record<string, unknown>;

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/** A QMP error reply, as an Error whose message is the QMP `desc`. */
export class QmpCommandError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    desc: string,
  ) {
    super(desc);
    this.name = 'QmpCommandError';
  }
}

/**
 * A small QMP client over a unix socket: newline-delimited JSON, the greeting, capabilities
 * negotiation, commands matched to replies by id, and an event listener.
 */
export class QmpClient {
  greeting?: QmpMessage;
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<number, { command: string; resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly eventListeners = new Set<(e: QmpEvent) => void>();
  private greeted?: (msg: QmpMessage) => void;
  private closedError?: Error;
  private readonly closeListeners = new Set<(err: Error) => void>();

  private constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => this.onData(d));
    socket.on('error', (err) => this.handleClose(err));
    socket.on('close', () => this.handleClose(new Error('QMP connection closed')));
  }

  /** Connects, reads the greeting and negotiates capabilities. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const socket = net.connect({ path });
    const client = new QmpClient(socket);
    const greeting = new Promise<QmpMessage>((resolve, reject) => {
      client.greeted = resolve;
      client.closeListeners.add(reject);
      const t = setTimeout(() => reject(new Error(`no QMP greeting on ${path} within ${timeoutMs} ms`)), timeoutMs);
      t.unref();
    });
    try {
      client.greeting = await greeting;
      await client.execute('qmp_capabilities');
    } catch (err) {
      socket.destroy();
      throw err;
    }
    return client;
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  /** Runs a command; resolves with its `return` value or rejects with the QMP error's desc. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedError) return Promise.reject(new Error(`${command}: ${this.closedError.message}`));
    const id = this.nextId++;
    const req: QmpMessage = { execute: command, id };
    if (args !== undefined) req.arguments = args;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(`${JSON.stringify(req)}\n`);
    });
  }

  /** Calls `fn` for every event; returns a function that removes it. */
  onEvent(fn: (e: QmpEvent) => void): () => void {
    this.eventListeners.add(fn);
    return () => void this.eventListeners.delete(fn);
  }

  /** Calls `fn` once when the connection closes or fails (at once if it already has). */
  onClose(fn: (err: Error) => void): () => void {
    if (this.closedError) {
      fn(this.closedError);
      return () => undefined;
    }
    this.closeListeners.add(fn);
    return () => void this.closeListeners.delete(fn);
  }

  private handleClose(err: Error): void {
    if (this.closedError) return;
    this.closedError = err;
    for (const p of this.pending.values()) p.reject(new Error(`${p.command}: ${err.message}`));
    this.pending.clear();
    for (const fn of this.closeListeners) fn(err);
    this.closeListeners.clear();
  }

  /** Resolves with the first event (from now on) that `match` accepts. */
  waitEvent(match: (e: QmpEvent) => boolean, timeoutMs = 0): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let offEvent = (): void => undefined;
      let offClose = (): void => undefined;
      const settle = (fn: () => void): void => {
        offEvent();
        offClose();
        if (timer) clearTimeout(timer);
        fn();
      };
      offEvent = this.onEvent((e) => {
        if (match(e)) settle(() => resolve(e));
      });
      offClose = this.onClose((err) => settle(() => reject(err)));
      if (timeoutMs > 0) timer = setTimeout(() => settle(() => reject(new Error(`no matching QMP event within ${timeoutMs} ms`))), timeoutMs);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(text: string): void {
    this.buffer += text;
    let i: number;
    while ((i = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, i).trim();
      this.buffer = this.buffer.slice(i + 1);
      if (line) this.onMessage(parseQmpLine(line));
    }
  }

  private onMessage(msg: QmpMessage): void {
    if ('QMP' in msg) {
      this.greeted?.(msg);
      this.greeted = undefined;
      return;
    }
    if ('event' in msg) {
      for (const fn of this.eventListeners) fn(msg as unknown as QmpEvent);
      return;
    }
    const id = typeof msg.id === 'number' ? msg.id : undefined;
    // A reply without our id (e.g. a parse error) goes to the oldest request.
    const key = id !== undefined && this.pending.has(id) ? id : this.pending.keys().next().value;
    if (key === undefined) return;
    const p = this.pending.get(key)!;
    this.pending.delete(key);
    if ('return' in msg) p.resolve(msg.return);
    else {
      const e = (msg.error ?? {}) as { class?: string; desc?: string };
      p.reject(new QmpCommandError(p.command, e.class ?? 'GenericError', e.desc ?? JSON.stringify(msg)));
    }
  }
}

/** JSON.parse, tolerating the bare inf/nan QEMU writes for non-finite doubles. */
function parseQmpLine(line: string): QmpMessage {
  try {
    return JSON.parse(line) as QmpMessage;
  } catch {
    return JSON.parse(line.replace(/([:\[,]\s*)(-?)(inf|nan)\b/g, '$1"$2$3"')) as QmpMessage;
  }
}

export interface DaemonOptions {
  /** Guest RAM: bytes, or a size string qmigd accepts ("256M"). */
  memory: number | string;
  /** Initial RAM contents (its size must equal `memory`). */
  memoryFile?: string;
  /** --dirty-rate: bytes per second, or a size string. */
  dirtyRate?: number | string;
  /** --dirty-pattern: uniform, sequential or hot:PERCENT. */
  dirtyPattern?: string;
  /** --log-level (must log at info or finer for the "QMP listening" line); default info. */
  logLevel?: string;
  /** Further command-line arguments. */
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
}

/** One running qmigd process with a negotiated QMP connection to its unix monitor. */
export class QmigdProcess {
  private stopping?: Promise<void>;

  private constructor(
    readonly name: string,
    readonly proc: ChildProcess,
    readonly socketPath: string,
    readonly qmp: QmpClient,
    private readonly log: () => string,
    readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>,
  ) {}

  /** Starts qmigd in `dir` with a monitor at dir/NAME.sock and connects to it. */
  static async start(name: string, dir: string, args: string[], opts: { logLevel?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; nodeArgs?: string[] } = {}): Promise<QmigdProcess> {
    const socketPath = join(dir, `${name}.sock`);
    const proc = spawn(
      process.execPath,
      [...(opts.nodeArgs ?? []), QMIGD_BIN, '--qmp', `unix:${socketPath},server=on,wait=off`, '--log-level', opts.logLevel ?? 'info', ...args],
      { cwd: dir, env: opts.env ?? process.env, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    // Keep the tail of stderr for error messages; the pipe is always drained.
    let tail = '';
    let partial = '';
    let listeningResolve!: (where: string) => void;
    const listening = new Promise<string>((r) => (listeningResolve = r));
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (d: string) => {
      tail = (tail + d).slice(-16_384);
      partial += d;
      let i: number;
      while ((i = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, i);
        partial = partial.slice(i + 1);
        if (line.includes('"msg":"QMP listening"')) {
          const m = /"qmp":"([^"]+)"/.exec(line);
          if (m) listeningResolve(m[1]!);
        }
      }
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      proc.on('exit', (code, signal) => resolve({ code, signal }));
      proc.on('error', () => resolve({ code: null, signal: null }));
    });
    const timeoutMs = opts.timeoutMs ?? 60_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        listening,
        exited.then(({ code, signal }) => {
          throw new Error(`${name}: qmigd exited (${signal ?? `status ${code}`}) before its monitor listened:\n${lastLines(tail)}`);
        }),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${name}: qmigd did not listen within ${timeoutMs} ms:\n${lastLines(tail)}`)), timeoutMs);
        }),
      ]);
      clearTimeout(timer);
      const qmp = await QmpClient.connect(socketPath);
      return new QmigdProcess(name, proc, socketPath, qmp, () => tail, exited);
    } catch (err) {
      clearTimeout(timer);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
      throw err;
    }
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** The last lines qmigd wrote on stderr (its pino log). */
  stderrTail(lines = 20): string {
    return lastLines(this.log(), lines);
  }

  /** quit over QMP, then SIGTERM, then SIGKILL, each after a grace period. Idempotent. */
  stop(graceMs = 3000): Promise<void> {
    this.stopping ??= (async () => {
      const waitExit = (ms: number): Promise<boolean> =>
        Promise.race([this.exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]);
      if (this.running && !this.qmp.closed) {
        this.qmp.execute('quit').catch(() => undefined);
        if (await waitExit(graceMs)) return this.qmp.close();
      }
      if (this.running) {
        this.proc.kill('SIGTERM');
        if (await waitExit(graceMs)) return this.qmp.close();
      }
      if (this.running) this.proc.kill('SIGKILL');
      await this.exited;
      this.qmp.close();
    })();
    return this.stopping;
  }
}

export interface PairOptions {
  /** Guest RAM of both sides: bytes or a size string. */
  memory: number | string;
  /** Source RAM contents. */
  memoryFile?: string;
  /** Source workload. */
  dirtyRate?: number | string;
  dirtyPattern?: string;
  /** Extra arguments for each side. */
  sourceArgs?: string[];
  destinationArgs?: string[];
  logLevel?: string;
  env?: NodeJS.ProcessEnv;
  /** A directory to use (and remove on stop); by default a new temp dir. */
  dir?: string;
  /** Loopback port for the incoming migration; by default a free one. */
  port?: number;
}

/** A destination (`--incoming tcp:127.0.0.1:PORT`) and a source, in one temporary directory. */
export class MigrationPair {
  private stopped?: Promise<void>;

  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly destination: QmigdProcess,
    readonly source: QmigdProcess,
  ) {}

  /** tcp:127.0.0.1:PORT, for `migrate`. */
  get uri(): string {
    return `tcp:127.0.0.1:${this.port}`;
  }

  static async start(opts: PairOptions): Promise<MigrationPair> {
    const dir = opts.dir ?? makeTempDir();
    const memory = String(opts.memory);
    const common = { logLevel: opts.logLevel, env: opts.env };
    let destination: QmigdProcess | undefined;
    try {
      const port = opts.port ?? (await freePort());
      destination = await QmigdProcess.start('destination', dir, ['-m', memory, '--incoming', `tcp:127.0.0.1:${port}`, ...(opts.destinationArgs ?? [])], common);
      const sourceArgs = ['-m', memory];
      if (opts.memoryFile) sourceArgs.push('--memory-file', opts.memoryFile);
      if (opts.dirtyRate !== undefined) sourceArgs.push('--dirty-rate', String(opts.dirtyRate));
      if (opts.dirtyPattern !== undefined) sourceArgs.push('--dirty-pattern', opts.dirtyPattern);
      const source = await QmigdProcess.start('source', dir, [...sourceArgs, ...(opts.sourceArgs ?? [])], common);
      return new MigrationPair(dir, port, destination, source);
    } catch (err) {
      await destination?.stop();
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** Stops both daemons and removes the directory. Idempotent. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      await Promise.allSettled([this.source.stop(), this.destination.stop()]);
      rmSync(this.dir, { recursive: true, force: true });
    })();
    return this.stopped;
  }
}

export function makeTempDir(prefix = 'qmigd-pair-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/**
 * A TCP port free on loopback right now, for a listener another process binds later.
 *
 * It is drawn at random from below the kernel's ephemeral range (ip_local_port_range): a port
 * the kernel hands out itself (to a `listen(0)` or to the local end of any outgoing connection)
 * could be taken again by another process in the moment between this check and the bind, which
 * is how a QEMU started in parallel with other tests failed with "Address already in use".
 */
export async function freePort(): Promise<number> {
  const [low, high] = pickRange();
  for (let attempt = 0; attempt < 64; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (await canListen(port)) return port;
  }
  throw new Error(`no free TCP port on loopback in ${low}-${high}`);
}

/** Up to 10,000 ports just below the ephemeral range, or those above it when few are below. */
function pickRange(): [number, number] {
  let [first, last] = [32768, 60999];
  try {
    const parsed = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (parsed.length === 2 && parsed.every(Number.isInteger)) [first, last] = parsed;
  } catch {
    // not Linux: keep the kernel's default
  }
  const below: [number, number] = [Math.max(1024, first - 10000), first - 1];
  const above: [number, number] = [last + 1, 65535];
  return below[1] - below[0] >= above[1] - above[0] ? below : above;
}

function canListen(port: number): Promise<boolean> {
  const s = net.createServer();
  return new Promise((resolve) => {
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * Writes `size` random bytes to `path`, generated with randomFillSync in pieces of `piece`
 * bytes (yielding to the event loop between pieces, so a Ctrl-C handler can run).
 */
export async function writeRandomFile(path: string, size: number, piece = 16 << 20, onProgress?: (done: number) => void): Promise<void> {
  const fd = openSync(path, 'w', 0o600);
  try {
    const buf = Buffer.allocUnsafe(Math.min(piece, size));
    for (let done = 0; done < size; ) {
      const len = Math.min(buf.length, size - done);
      randomFillSync(buf, 0, len);
      for (let off = 0; off < len; ) off += writeSync(fd, buf, off, len - off);
      done += len;
      onProgress?.(done);
      await new Promise((r) => setImmediate(r));
    }
  } finally {
    closeSync(fd);
  }
}

function lastLines(text: string, n = 20): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}

/** Final migration states. */
export const FINAL = new Set(['completed', 'failed', 'cancelled']);

/** The parts of query-migrate the demo and the benchmark read. */
export interface MigrateInfo {
  status?: string;
  'error-desc'?: string;
  'setup-time'?: number;
  'total-time'?: number;
  downtime?: number;
  'expected-downtime'?: number;
  ram?: {
    transferred: number;
    remaining: number;
    total: number;
    duplicate: number;
    normal: number;
    'normal-bytes': number;
    mbps: number;
    'dirty-sync-count': number;
    'pages-per-second': number;
    'precopy-bytes': number;
    'downtime-bytes': number;
    'dirty-pages-rate': number;
  };
  'xbzrle-cache'?: {
    'cache-size': number;
    bytes: number;
    pages: number;
    'cache-miss': number;
    'cache-miss-rate': number | string;
    'encoding-rate': number | string;
    overflow: number;
  };
  'cpu-throttle-percentage'?: number;
}

/** The destination's incoming status once final (or 'exited' if the daemon went away). */
export async function waitIncomingDone(dst: QmpClient, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let status: string;
    try {
      status = (await dst.execute<MigrateInfo>('query-migrate')).status ?? 'none';
    } catch (err) {
      return `exited (${(err as Error).message})`;
    }
    if (FINAL.has(status)) return status;
    if (Date.now() > deadline) return `still ${status} after ${timeoutMs} ms`;
    await new Promise((r) => setTimeout(r, 20));
  }
}
