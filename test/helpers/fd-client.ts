/**
 * A QMP client that passes descriptors (SCM_RIGHTS) over a unix monitor, as libvirt does. Node
 * cannot send descriptors, so the client is a small python3 relay (socket.send_fds) driven over
 * its stdin and stdout; the descriptors it sends are its own: pipes, socketpairs, TCP
 * connections and files it opens on request, named by the test. It can also drain a descriptor
 * into a file and say when it met the end (a pipe's reading end, the other end of a socket).
 *
 * Works against qmigd and a real QEMU alike, so transcripts with descriptors can be compared.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readlinkSync } from 'node:fs';

const RELAY = String.raw`
import json, os, socket, sys, threading
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
lock = threading.Lock()
def emit(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + '\n')
        sys.stdout.flush()
def read_qmp():
    buf = b''
    while True:
        try:
            d = s.recv(65536)
        except OSError:
            d = b''
        if not d:
            emit({'closed': True})
            return
        buf += d
        while b'\n' in buf:
            line, buf = buf.split(b'\n', 1)
            emit({'line': line.decode('latin1').rstrip('\r')})
threading.Thread(target=read_qmp, daemon=True).start()
fds = {}
def ident(fd):
    st = os.fstat(fd)
    return {'ino': st.st_ino, 'link': os.readlink('/proc/self/fd/%d' % fd)}
def drain(name, path, tell):
    fd = fds.pop(name)
    n = 0
    out = open(path, 'wb') if path else None
    while True:
        d = os.read(fd, 1 << 20)
        if not d:
            break
        n += len(d)
        if out:
            out.write(d)
        if tell and n >= tell:
            emit({'progress': name, 'bytes': n})
            tell = 0
    if out:
        out.close()
    os.close(fd)
    emit({'eof': name, 'bytes': n})
for line in sys.stdin:
    op = json.loads(line)
    res = {'done': op['id']}
    try:
        k = op['op']
        if k == 'send':
            # parts: several messages sent back to back, each in one sendmsg() with its descriptors.
            for part in op.get('parts') or [{'data': op['data'], 'fds': op.get('fds')}]:
                data = part['data'].encode('latin1')
                if part.get('fds'):
                    socket.send_fds(s, [data], [fds[n] for n in part['fds']])
                else:
                    s.sendall(data)
        elif k == 'pipe':
            r, w = os.pipe()
            fds[op['name'] + '.r'], fds[op['name'] + '.w'] = r, w
            res.update(ident(w))
        elif k == 'socketpair':
            a, b = socket.socketpair()
            fds[op['name'] + '.a'], fds[op['name'] + '.b'] = a.detach(), b.detach()
            res['a'], res['b'] = ident(fds[op['name'] + '.a']), ident(fds[op['name'] + '.b'])
        elif k == 'tcp':
            c = socket.create_connection(('127.0.0.1', op['port']))
            fds[op['name']] = c.detach()
            res.update(ident(fds[op['name']]))
        elif k == 'listen':
            l = socket.socket()
            l.bind(('127.0.0.1', 0))
            l.listen(1)
            fds[op['name']] = l.detach()
            res['port'] = socket.socket(fileno=os.dup(fds[op['name']])).getsockname()[1]
        elif k == 'accept':
            l = socket.socket(fileno=os.dup(fds[op['name']]))
            c, _ = l.accept()
            l.close()
            fds[op['as']] = c.detach()
            res.update(ident(fds[op['as']]))
        elif k == 'feed':
            with open(op['path'], 'rb') as f:
                data = f.read()
            os.write(fds[op['name']], data) if len(data) < 65536 else socket.socket(fileno=os.dup(fds[op['name']])).sendall(data)
        elif k == 'open':
            fds[op['name']] = os.open(op['path'], os.O_RDWR | os.O_CREAT, 0o600)
            os.lseek(fds[op['name']], op.get('at', 0), os.SEEK_SET)
            res.update(ident(fds[op['name']]))
        elif k == 'close':
            os.close(fds.pop(op['name']))
        elif k == 'drain':
            threading.Thread(target=drain, args=(op['name'], op.get('path'), op.get('tell', 0)), daemon=True).start()
        elif k == 'disconnect':
            s.shutdown(socket.SHUT_RDWR)
            s.close()
    except Exception as e:
        res['error'] = repr(e)
    emit(res)
`;

export type Msg = Record<string, unknown>;

/** A resource of the relay's: the inode and /proc link of its descriptor, to find it in another process. */
export interface Ident {
  ino: number;
  link: string;
}

export class FdClient {
  readonly lines: string[] = [];
  readonly events: Msg[] = [];
  readonly ends = new Map<string, number>();
  closed = false;
  private nextId = 1;
  private readonly done = new Map<number, (r: Msg) => void>();
  private waiters: Array<() => void> = [];
  private partial = '';

  private constructor(private readonly proc: ChildProcess) {
    proc.stdout!.on('data', (d: Buffer) => this.onOutput(d.toString('latin1')));
    proc.on('exit', () => {
      this.closed = true;
      this.wake();
    });
  }

  /** Connects to a unix monitor and negotiates (unless `negotiate` is false). */
  static async connect(path: string, negotiate = true): Promise<FdClient> {
    const c = new FdClient(spawn('python3', ['-c', RELAY, path], { stdio: ['pipe', 'pipe', 'inherit'] }));
    await c.until(() => c.lines.length >= 1, 'the greeting');
    if (negotiate) await c.cmd('qmp_capabilities');
    return c;
  }

  private onOutput(text: string): void {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop()!;
    for (const line of lines) {
      const m = JSON.parse(line) as Msg;
      if (typeof m.line === 'string') {
        this.lines.push(m.line);
        const parsed = JSON.parse(m.line) as Msg;
        if ('event' in parsed) this.events.push(parsed);
      } else if (m.closed) this.closed = true;
      else if (typeof m.eof === 'string') this.ends.set(m.eof, m.bytes as number);
      else if (typeof m.done === 'number') {
        this.done.get(m.done)?.(m);
        this.done.delete(m.done);
      }
    }
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  /** Waits for `cond`, re-checked whenever the relay says something. */
  async until(cond: () => boolean, what: string, timeoutMs = 30000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last lines: ${JSON.stringify(this.lines.slice(-3))}`);
      if (this.closed && this.proc.exitCode !== null) throw new Error(`relay exited while waiting for ${what}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
  }

  /** Runs one relay operation; rejects with the relay's error. */
  async op(op: string, args: Msg = {}): Promise<Msg> {
    const id = this.nextId++;
    const reply = new Promise<Msg>((r) => this.done.set(id, r));
    this.proc.stdin!.write(`${JSON.stringify({ id, op, ...args })}\n`);
    const r = await reply;
    if (r.error) throw new Error(`${op}: ${r.error as string}`);
    return r;
  }

  /** Sends raw text, with the named descriptors, and returns the next reply line (events are kept aside). */
  async raw(text: string, fds: string[] = []): Promise<string> {
    const from = this.lines.length;
    await this.op('send', { data: text, fds });
    return this.nextReply(from);
  }

  async nextReply(from: number): Promise<string> {
    return this.lines[await this.replyIndex(from)]!;
  }

  /** Where the first reply (not an event) at or after line `from` is, once it has come. */
  async replyIndex(from: number): Promise<number> {
    for (let i = from; ; i++) {
      await this.until(() => this.lines.length > i || this.closed, `reply line ${i}`);
      if (this.lines.length <= i) throw new Error('the monitor closed the connection');
      if (!this.lines[i]!.startsWith('{"timestamp"')) return i;
    }
  }

  async cmd(execute: string, args?: Msg, fds: string[] = []): Promise<Msg> {
    return JSON.parse(await this.raw(JSON.stringify(args ? { execute, arguments: args } : { execute }), fds)) as Msg;
  }

  async ok(execute: string, args?: Msg, fds: string[] = []): Promise<unknown> {
    const r = await this.cmd(execute, args, fds);
    if ('error' in r) throw new Error(`${execute}: ${JSON.stringify(r.error)}`);
    return r.return;
  }

  pipe(name: string): Promise<Ident> {
    return this.op('pipe', { name }) as unknown as Promise<Ident>;
  }

  async socketpair(name: string): Promise<{ a: Ident; b: Ident }> {
    return (await this.op('socketpair', { name })) as unknown as { a: Ident; b: Ident };
  }

  tcp(name: string, port: number): Promise<Ident> {
    return this.op('tcp', { name, port }) as unknown as Promise<Ident>;
  }

  /** Writes the file at `path` into the named socket (and keeps the socket open). */
  async feed(name: string, path: string): Promise<void> {
    await this.op('feed', { name, path });
  }

  /** A TCP listener on loopback; returns its port. */
  async listen(name: string): Promise<number> {
    return (await this.op('listen', { name })).port as number;
  }

  /** The listener's next connection, named `as`. */
  accept(name: string, as: string): Promise<Ident> {
    return this.op('accept', { name, as }) as unknown as Promise<Ident>;
  }

  /** Opens `path` (read and write, created if need be) as `name`, its offset at `at`. */
  open(name: string, path: string, at = 0): Promise<Ident> {
    return this.op('open', { name, path, at }) as unknown as Promise<Ident>;
  }

  async close(name: string): Promise<void> {
    await this.op('close', { name });
  }

  /** Reads the named descriptor to its end (into `path` if given); waitEnd() tells when. */
  async drain(name: string, path?: string): Promise<void> {
    await this.op('drain', { name, path });
  }

  async waitEnd(name: string, timeoutMs = 30000): Promise<number> {
    await this.until(() => this.ends.has(name), `the end of ${name}`, timeoutMs);
    return this.ends.get(name)!;
  }

  async disconnect(): Promise<void> {
    await this.op('disconnect');
    await this.until(() => this.closed, 'the disconnect');
  }

  /** Ends the relay (and with it the connection). */
  async quit(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    this.proc.stdin!.end();
    this.proc.kill();
    await new Promise((r) => this.proc.once('exit', r));
  }

  async waitEvent(name: string, match: (data: Msg) => boolean = () => true, timeoutMs = 60000): Promise<Msg> {
    let hit: Msg | undefined;
    await this.until(() => (hit = this.events.find((e) => e.event === name && match((e.data ?? {}) as Msg))) !== undefined, `event ${name}`, timeoutMs);
    return hit!;
  }
}

/** What a process holds open: each descriptor's /proc link (pipe:[INO], socket:[INO], a path). */
export function openDescriptors(pid: number): string[] {
  const links: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      links.push(readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      /* closed meanwhile */
    }
  }
  return links;
}

/** Whether `pid` holds the relay's resource `r` (by its /proc link, which names its inode). */
export function holds(pid: number, r: Ident): boolean {
  return openDescriptors(pid).includes(r.link);
}
