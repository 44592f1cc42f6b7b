/**
 * A QMP probe for qmp-abuse.ts, in a process of its own: `node qmp-probe.js SOCKET COMMAND`
 * negotiates, prints "ready", then sends COMMAND every 20 ms (one in flight) and times each
 * answer, until its standard input closes; then it prints {samples, stuckMs} as JSON, stuckMs
 * being how long a request still unanswered had waited (a daemon that stopped answering).
 */
import net from 'node:net';

const [path, command] = process.argv.slice(2) as [string, string];
const socket = net.connect(path);
socket.setEncoding('utf8');
socket.on('error', () => undefined);
let buf = '';
let wake: (() => void) | undefined;
socket.on('data', (d: string) => {
  buf += d;
  wake?.();
});
socket.on('close', () => wake?.());

/** The next line that is not an event; undefined once the connection is gone. */
async function reply(): Promise<string | undefined> {
  for (;;) {
    const i = buf.indexOf('\r\n');
    if (i >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!line.startsWith('{"timestamp"')) return line;
      continue;
    }
    if (socket.destroyed) return undefined;
    await new Promise<void>((r) => (wake = r));
  }
}

let stopping = false;
let sentAt = 0;
const samples: number[] = [];
process.stdin.resume();
process.stdin.on('end', () => {
  stopping = true;
  const stuck = sentAt ? performance.now() - sentAt : 0;
  // A reply still due within a second is waited for; a daemon that hangs is reported as such.
  setTimeout(() => finish(stuck >= 1000 ? stuck : undefined), stuck >= 1000 ? 0 : 1000);
});

function finish(stuckMs: number | undefined): void {
  process.stdout.write(JSON.stringify({ samples, stuckMs }));
  process.exit(0);
}

await reply(); // greeting
socket.write('{"execute":"qmp_capabilities"}\n');
await reply();
process.stdout.write('ready\n');
while (!stopping) {
  sentAt = performance.now();
  socket.write(`{"execute":"${command}"}\n`);
  if ((await reply()) === undefined) break;
  samples.push(performance.now() - sentAt);
  sentAt = 0;
  await new Promise((r) => setTimeout(r, 20));
}
if (stopping) finish(undefined);
