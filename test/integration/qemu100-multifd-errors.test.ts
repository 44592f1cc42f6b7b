/**
 * Bad multifd channels, QEMU 10.0's way: the same crafted greetings and packets go to a real QEMU
 * 10.0 destination and to a qmigd --qemu-version 10.0 one, and each must exit 1 reporting the
 * same multifd error (a bad greeting fails the migration at once; a bad packet is reported, last,
 * once the main stream fails). Not here: a channel id equal to the count (QEMU 10.0 crashes on it)
 * and a greeting cut short (QEMU 10.0 waits forever).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { encodeInit } from '../../src/migration/multifd/format.js';
import { BIN, tempDir } from '../helpers/daemon.js';
import { QEMU_OF, qemuSkip } from '../helpers/qemu.js';
import { connectQmp, delay } from '../helpers/interop.js';

const skip = qemuSkip('10.0');

function init(id: number, o: { magic?: number; version?: number; uuid?: number } = {}): Buffer {
  const b = encodeInit(id);
  if (o.magic !== undefined) b.writeUInt32BE(o.magic, 0);
  if (o.version !== undefined) b.writeUInt32BE(o.version, 4);
  if (o.uuid !== undefined) b.fill(o.uuid, 8, 24);
  return b;
}

/** A 10.0 RAM packet header with any field wrong (block `ram`, as -M none names it). */
function packet(o: { magic?: number; version?: number; flags?: number; alloc?: number; normal?: number; zero?: number; block?: string; offsets?: number[] }): Buffer {
  const b = Buffer.alloc(1344);
  b.writeUInt32BE(o.magic ?? 0x11223344, 0);
  b.writeUInt32BE(o.version ?? 1, 4);
  b.writeUInt32BE(o.flags ?? 0, 8);
  b.writeUInt32BE(o.alloc ?? 128, 12);
  b.writeUInt32BE(o.normal ?? 0, 16);
  b.writeUInt32BE((o.normal ?? 0) * 4096, 20);
  b.writeUInt32BE(o.zero ?? 0, 32);
  b.write(o.block ?? 'ram', 64, 'latin1');
  (o.offsets ?? []).forEach((off, i) => b.writeBigUInt64BE(BigInt(off), 320 + i * 8));
  return b;
}

const withPacket = (p: Buffer): Buffer[] => [Buffer.concat([init(0), p]), init(1)];
const CASES: Record<string, Buffer[]> = {
  'greeting magic': [init(0, { magic: 0xdeadbeef })],
  'greeting version': [init(0, { version: 2 })],
  'greeting uuid': [init(1, { uuid: 7 })],
  'channel id past the count': [init(3)],
  'channel id twice': [init(0), init(0)],
  'packet magic': withPacket(packet({ magic: 0xdeadbeef })),
  'packet version': withPacket(packet({ version: 9 })),
  'pages_alloc': withPacket(packet({ alloc: 129 })),
  'normal pages': withPacket(packet({ alloc: 4, normal: 5 })),
  'zero pages': withPacket(packet({ alloc: 4, normal: 2, zero: 3 })),
  'unknown block': withPacket(packet({ normal: 1, block: 'nope', offsets: [0] })),
  'zero page offset': withPacket(packet({ zero: 1, offsets: [2 << 20] })),
  'compression flags': withPacket(packet({ flags: 2, normal: 1, offsets: [0] })),
  'empty device state': withPacket(packet({ flags: 0x40 })),
};

/** Runs a 2 MiB multifd destination (2 channels), feeds it `channels`, and returns its exit and report lines. */
async function feed(kind: 'qemu' | 'qmigd', channels: Buffer[]): Promise<{ code: number | null; lines: string[] }> {
  const dir = tempDir();
  const qmpPath = join(dir, 'q.sock');
  const mig = join(dir, 'm.sock');
  const monitor = `unix:${qmpPath},server=on,wait=off`;
  const proc: ChildProcess =
    kind === 'qemu'
      ? spawn(QEMU_OF['10.0'], ['-M', 'none', '-m', '2M', '-display', 'none', '-nodefaults', '-incoming', 'defer', '-qmp', monitor])
      : spawn(process.execPath, [BIN, '--qemu-version', '10.0', '-m', '2M', '--incoming', 'defer', '--log-level', 'error', '--qmp', monitor]);
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const sockets: net.Socket[] = [];
  try {
    const qmp = await connectQmp(qmpPath, () => proc.exitCode === null, () => err, 5000);
    await qmp.negotiate();
    await qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
    await qmp.ok('migrate-set-parameters', { 'multifd-channels': 2 });
    await qmp.ok('migrate-incoming', { uri: `unix:${mig}` });
    const open = (bytes: Buffer): net.Socket => {
      const s = net.connect(mig);
      s.on('error', () => undefined);
      s.write(bytes);
      sockets.push(s);
      return s;
    };
    const main = open(Buffer.from('5145564d00000003', 'hex'));
    for (const c of channels) {
      await delay(100);
      open(c);
    }
    // QEMU 10.0 reports a bad packet only once the main stream fails: end it after the packets
    // have had time to arrive (no event tells when a channel thread has read its packet; under
    // the whole suite's load qmigd's channel threads took more than half a second to start).
    await delay(2000);
    main.end();
    const code = await Promise.race([exited, delay(10000).then(() => 'hung' as const)]);
    qmp.close();
    const lines = err.split('\n').filter(Boolean).map((l) => (l.startsWith('{') ? (JSON.parse(l) as { msg: string }).msg : l.replace(/^qemu-system-x86_64: /, '')));
    return { code: code === 'hung' ? null : code, lines };
  } finally {
    for (const s of sockets) s.destroy();
    proc.kill('SIGKILL');
  }
}

for (const [name, channels] of Object.entries(CASES)) {
  t.test(`a bad multifd ${name}: qmigd 10.0 reports what QEMU 10.0 reports, and exits 1`, { skip }, async (t) => {
    const [qemu, qmigd] = await Promise.all([feed('qemu', channels), feed('qmigd', channels)]);
    t.equal(qemu.code, 1, `QEMU exits 1: ${JSON.stringify(qemu.lines)}`);
    t.equal(qmigd.code, 1, `qmigd exits 1: ${JSON.stringify(qmigd.lines)}`);
    const theirs = qemu.lines.at(-1)!;
    t.match(theirs, /multifd/, 'QEMU names multifd last');
    t.equal(qmigd.lines.at(-1), theirs, 'the same last line');
  });
}
