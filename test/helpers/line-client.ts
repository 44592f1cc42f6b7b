/**
 * A bare client of a monitor that waits for nothing: it connects, sends what it is told and
 * records every line (or WebSocket message) that comes, and when, so a test can see that a client
 * got nothing at all, and what it got first. QmpClient, by contrast, waits for the greeting.
 */
import net from 'node:net';
import WebSocket from 'ws';

export class LineClient {
  readonly lines: string[] = [];
  /** performance.now() when each line came. */
  readonly times: number[] = [];
  closed = false;
  /** The connection was refused or failed (ECONNREFUSED, EAGAIN, a refused handshake...). */
  error?: string;
  /** Resolves once connected (a WebSocket: once its handshake is done); rejects if that fails. */
  readonly connected: Promise<void>;
  private buffer = '';
  private waiters: Array<() => void> = [];
  private readonly write: (text: string) => void;
  private readonly shut: () => void;
  private readonly destroy: () => void;

  constructor(where: string) {
    if (where.startsWith('ws:')) {
      const ws = new WebSocket(`ws://${where.slice(3)}`);
      this.write = (text) => ws.send(text);
      this.shut = () => ws.close();
      this.destroy = () => ws.terminate();
      ws.on('message', (d: Buffer) => this.onLine(d.toString('latin1')));
      ws.on('close', () => this.onClose());
      ws.on('error', (err) => this.onError(err));
      this.connected = new Promise((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
    } else {
      const m = /^tcp:(.*):(\d+)$/.exec(where);
      const socket = where.startsWith('unix:') ? net.connect({ path: where.slice(5) }) : net.connect({ host: m![1]!, port: Number(m![2]) });
      this.write = (text) => socket.write(text);
      this.shut = () => socket.end();
      this.destroy = () => socket.destroy();
      socket.on('data', (d: Buffer) => this.onData(d.toString('latin1')));
      socket.on('close', () => this.onClose());
      socket.on('error', (err) => this.onError(err));
      this.connected = new Promise((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('error', reject);
      });
    }
    this.connected.catch(() => undefined); // a test that expects a refusal looks at error instead
  }

  /** Sends text as is (a WebSocket: one message). */
  send(text: string): void {
    this.write(text);
  }

  /** Shuts the sending side (a socket), or starts a WebSocket's closing handshake. */
  end(): void {
    this.shut();
  }

  close(): void {
    this.destroy();
  }

  /** Resolves once at least n lines have come; rejects if the connection closes first or the time runs out. */
  async waitLines(n: number, timeoutMs = 5000): Promise<void> {
    await this.until(() => this.lines.length >= n || this.closed, timeoutMs, `line ${n}`);
    if (this.lines.length < n) throw new Error(`connection closed after ${this.lines.length} lines: ${JSON.stringify(this.lines)}`);
  }

  /** Resolves once the connection has closed. */
  waitClosed(timeoutMs = 5000): Promise<void> {
    return this.until(() => this.closed, timeoutMs, 'the close');
  }

  private async until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (!done()) {
      if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}; have ${JSON.stringify(this.lines)}`);
      await new Promise<void>((res) => {
        this.waiters.push(res);
        setTimeout(res, 50);
      });
    }
  }

  private onData(text: string): void {
    this.buffer += text;
    let i: number;
    while ((i = this.buffer.indexOf('\r\n')) >= 0) {
      this.onLine(this.buffer.slice(0, i));
      this.buffer = this.buffer.slice(i + 2);
    }
  }

  private onLine(line: string): void {
    this.lines.push(line);
    this.times.push(performance.now());
    this.wake();
  }

  private onError(err: Error): void {
    this.error ??= (err as NodeJS.ErrnoException).code ?? err.message;
    this.onClose();
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
}
