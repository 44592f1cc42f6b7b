/**
 * A minimal QMP client over a real socket or WebSocket, keeping raw lines so tests can assert
 * QEMU's exact bytes.
 */
import net from 'node:net';
import WebSocket from 'ws';

export type Msg = Record<string, unknown>;

export class QmpClient {
  readonly lines: string[] = [];
  readonly events: Msg[] = [];
  private buffer = '';
  private waiters: Array<() => void> = [];
  closed = false;

  private constructor(private readonly write: (data: string | Buffer) => void, private readonly end: () => void) {}

  static async unix(path: string): Promise<QmpClient> {
    return QmpClient.stream(net.connect({ path }));
  }

  static async tcp(host: string, port: number): Promise<QmpClient> {
    return QmpClient.stream(net.connect({ host, port }));
  }

  static async at(where: string): Promise<QmpClient> {
    if (where.startsWith('unix:')) return QmpClient.unix(where.slice(5));
    const [, scheme, host, port] = /^(tcp|ws):(.*):(\d+)$/.exec(where)!;
    if (scheme === 'ws') return QmpClient.ws(`ws://${host}:${port}`);
    return QmpClient.tcp(host!, Number(port));
  }

  private static stream(socket: net.Socket): Promise<QmpClient> {
    const c = new QmpClient((d) => socket.write(d), () => socket.destroy());
    socket.on('data', (d: Buffer) => c.onData(d.toString('latin1')));
    socket.on('close', () => c.onClose());
    socket.on('error', () => c.onClose());
    return c.waitLines(1).then(() => c);
  }

  static ws(url: string): Promise<QmpClient> {
    const ws = new WebSocket(url);
    const c = new QmpClient((d) => ws.send(d), () => ws.terminate());
    ws.on('message', (d: Buffer) => c.onData(`${d.toString('latin1')}\r\n`));
    ws.on('close', () => c.onClose());
    ws.on('error', () => c.onClose());
    return c.waitLines(1).then(() => c);
  }

  private onData(text: string): void {
    this.buffer += text;
    let i: number;
    while ((i = this.buffer.indexOf('\r\n')) >= 0) {
      const line = this.buffer.slice(0, i);
      this.buffer = this.buffer.slice(i + 2);
      this.lines.push(line);
      const msg = JSON.parse(line.replace(/: (-?)(inf|nan)\b/g, ': "$1$2"')) as Msg;
      if ('event' in msg) this.events.push(msg);
    }
    this.wake();
  }

  private onClose(): void {
    this.closed = true;
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  /** Resolves when at least n lines have arrived in all (or the peer closed). */
  async waitLines(n: number, timeoutMs = 10000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length < n && !this.closed) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for line ${n}; have ${JSON.stringify(this.lines.slice(-3))}`);
      await new Promise<void>((res) => {
        this.waiters.push(res);
        setTimeout(res, 200);
      });
    }
    if (this.lines.length < n) throw new Error(`connection closed after ${this.lines.length} lines`);
  }

  /** Sends raw bytes. */
  send(data: string | Buffer): void {
    this.write(data);
  }

  /** Sends raw text and returns the next reply line (events are skipped but kept). */
  async raw(text: string | Buffer, timeoutMs?: number): Promise<string> {
    const from = this.lines.length;
    this.write(text);
    return this.nextReply(from, timeoutMs);
  }

  /** The first non-event line at or after index `from`. */
  async nextReply(from: number, timeoutMs?: number): Promise<string> {
    for (let i = from; ; i++) {
      await this.waitLines(i + 1, timeoutMs);
      if (!this.lines[i]!.startsWith('{"timestamp"')) return this.lines[i]!;
    }
  }

  /** The next `n` non-event lines at or after index `from` (events that came between are skipped). */
  async replies(from: number, n: number, timeoutMs?: number): Promise<string[]> {
    const out: string[] = [];
    for (let i = from; out.length < n; i++) {
      await this.waitLines(i + 1, timeoutMs);
      if (!this.lines[i]!.startsWith('{"timestamp"')) out.push(this.lines[i]!);
    }
    return out;
  }

  /** `timeoutMs`: how long the reply may take (10 s unless said; hashing a big guest takes longer). */
  async cmd(execute: string, args?: Msg, id?: unknown, timeoutMs?: number): Promise<Msg> {
    const req: Msg = { execute };
    if (args) req.arguments = args;
    if (id !== undefined) req.id = id;
    return JSON.parse(await this.raw(JSON.stringify(req), timeoutMs)) as Msg;
  }

  async negotiate(enable?: string[]): Promise<void> {
    const r = await this.cmd('qmp_capabilities', enable ? { enable } : undefined);
    if (!('return' in r)) throw new Error(`negotiation failed: ${JSON.stringify(r)}`);
  }

  /** The command's `return` value; an error reply fails the caller with its description. */
  async ok(execute: string, args?: Msg, timeoutMs?: number): Promise<unknown> {
    const r = await this.cmd(execute, args, undefined, timeoutMs);
    if ('error' in r) throw new Error(`${execute}: ${JSON.stringify(r.error)}`);
    return r.return;
  }

  /**
   * The first event named `name` (whose data satisfies `match`) at or after index `from` of
   * `events`; waits for it to arrive.
   */
  async waitEvent(name: string, match: (data: Msg) => boolean = () => true, from = 0, timeoutMs = 60000): Promise<Msg> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.events.slice(from).find((e) => e.event === name && match((e.data ?? {}) as Msg));
      if (hit) return hit;
      if (this.closed) throw new Error(`connection closed while waiting for ${name}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${name}; events: ${JSON.stringify(this.events.slice(-5))}`);
      await new Promise<void>((res) => {
        this.waiters.push(res);
        setTimeout(res, 200);
      });
    }
  }

  close(): void {
    this.end();
  }
}
