/**
 * The native addon's reader (src/native/unix-reader.ts) on a real unix socket, with the
 * descriptors sent by python3's socket.send_fds, as a client of a unix monitor would send them:
 * bytes and descriptors come out together and in order; the bytes sent before a message with
 * descriptors come out alone, even when the kernel would have glued them into one read; more
 * than 16 descriptors are cut to 16 and said to be; received descriptors are close-on-exec;
 * flow control holds the bytes back; the net.Socket itself never reads; close() lets the peer
 * see the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync, closeSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { UnixReader } from '../../src/native/unix-reader.js';
import { tempDir } from '../helpers/daemon.js';

interface Chunk {
  text: string;
  fds: number[];
  truncated: boolean;
}

/** A unix server whose next connection comes paused, and python3 running `script` as its client (`s` is the socket). */
async function withPythonClient(script: string): Promise<{ socket: net.Socket; proc: ChildProcess; python: Promise<string>; dir: string; close: () => void }> {
  const dir = tempDir();
  const path = join(dir, 's.sock');
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((r) => server.listen(path, r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const py = spawn('python3', ['-c', `import socket, os, sys, time\ns = socket.socket(socket.AF_UNIX)\ns.connect(${JSON.stringify(path)})\n${script}`], {
    cwd: dir,
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let out = '';
  py.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const python = new Promise<string>((resolve, reject) =>
    py.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`python3 exited with ${code}: ${out}`)))),
  );
  const socket = await accepted;
  return { socket, proc: py, python, dir, close: () => server.close() };
}

/** Collects what the reader hands over until the end of the stream. */
function collect(socket: net.Socket): { reader: UnixReader; chunks: Chunk[]; ended: Promise<void> } {
  const chunks: Chunk[] = [];
  let reader!: UnixReader;
  const ended = new Promise<void>((resolve, reject) => {
    reader = new UnixReader(UnixReader.fdOf(socket)!, {
      data: (chunk, fds, truncated) => chunks.push({ text: chunk.toString('latin1'), fds, truncated }),
      end: resolve,
      error: reject,
    });
  });
  return { reader, chunks, ended };
}

const fdTarget = (fd: number): string => readlinkSync(`/proc/self/fd/${fd}`);
const openFds = (): number => readdirSync('/proc/self/fd').length;

t.test('bytes and descriptors come out in order, each batch with the bytes sent with it', async (t) => {
  // Everything is sent and the client gone before the reader starts: the kernel holds it all,
  // and would glue "abc" and "def" into one read.
  const { socket, python, dir, close } = await withPythonClient(`
a = open('a.txt', 'w'); b = open('b.txt', 'w')
s.sendall(b'abc')
socket.send_fds(s, [b'def'], [a.fileno()])
socket.send_fds(s, [b'gh'], [a.fileno(), b.fileno()])
s.sendall(b'ij')
s.sendall(b'kl')
many = [open('m%d.txt' % i, 'w') for i in range(20)]
socket.send_fds(s, [b'mno'], [f.fileno() for f in many])
s.close()
`);
  t.teardown(close);
  await python;
  const before = openFds();
  const { reader, chunks, ended } = collect(socket);
  reader.start();
  await ended;
  t.same(
    chunks.map((c) => [c.text, c.fds.map((fd) => fdTarget(fd).replace(`${dir}/`, '')), c.truncated]),
    [
      ['abc', [], false],
      ['def', ['a.txt'], false],
      ['gh', ['a.txt', 'b.txt'], false],
      ['ijkl', [], false],
      ['mno', Array.from({ length: 16 }, (_, i) => `m${i}.txt`), true],
    ],
    'each batch begins a chunk; 16 of 20 descriptors kept, and the cut said',
  );
  for (const c of chunks) {
    for (const fd of c.fds) {
      const flags = parseInt(/flags:\s+(\d+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!, 8);
      t.ok(flags & 0o2000000, `fd ${fd} is close-on-exec`, { diagnostic: false });
    }
  }
  t.equal(openFds(), before + 19 + 1, 'the descriptors received, and the reader\'s dup of the socket');
  t.equal(socket.bytesRead, 0, 'the net.Socket read nothing itself');
  chunks.flatMap((c) => c.fds).forEach((fd) => closeSync(fd));
  reader.close();
  socket.destroy();
  // Handles close in the loop's close phase, a turn or two later.
  for (let i = 0; i < 100 && openFds() !== before - 1; i++) await new Promise((r) => setTimeout(r, 5));
  t.equal(openFds(), before - 1, 'close() released the dup (and destroy() the socket)');
});

t.test('a megabyte comes through whole; stop() holds bytes back until start()', async (t) => {
  const { socket, proc, python, close } = await withPythonClient(`
s.sendall(bytes(range(256)) * 4096)
sys.stdin.readline()
s.sendall(b'after')
s.close()
`);
  t.teardown(close);
  const { reader, chunks, ended } = collect(socket);
  const total = (): number => chunks.reduce((n, c) => n + c.text.length, 0);
  reader.start();
  while (total() < 1 << 20) await new Promise((r) => setTimeout(r, 5));
  t.equal(chunks.map((c) => c.text).join(''), Buffer.from(Array.from({ length: 1 << 20 }, (_, i) => i & 255)).toString('latin1'), 'in order');
  t.ok(chunks.every((c) => c.fds.length === 0), 'no descriptors');
  reader.stop();
  proc.stdin!.write('go\n');
  await python; // "after" and the end are waiting in the socket
  await new Promise((r) => setTimeout(r, 50));
  t.equal(total(), 1 << 20, 'nothing is read while stopped');
  reader.start();
  await ended;
  t.equal(chunks.at(-1)!.text, 'after', 'start() reads on, to the end');
  reader.close();
  socket.destroy();
});

t.test('the socket still writes; the peer sees the end once reader and socket are closed', async (t) => {
  const { socket, python, close } = await withPythonClient(`
s.sendall(b'ping')
print(s.recv(100).decode())
print(repr(s.recv(100)))
`);
  t.teardown(close);
  const { reader, chunks } = collect(socket);
  reader.start();
  while (chunks.length === 0) await new Promise((r) => setTimeout(r, 5));
  t.equal(chunks[0]!.text, 'ping');
  socket.write('pong', () => {
    reader.close();
    socket.destroy();
  });
  t.equal(await python, "pong\nb''\n", 'the reply, then the end of the stream');
});
