/**
 * The stream format itself: real QEMU 7.2 captures load into exactly the RAM they carry, qmigd's
 * own streams survive files and unix sockets (and, where QEMU is installed, load into a real
 * QEMU 7.2), and corrupt streams make the destination exit 1 with QEMU's reasons.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';
import t from 'tap';
import { BIN, freePort, REPO, startDaemon, tempDir, threadsSettled } from '../helpers/daemon.js';
import { encodeHeader, encodeInit } from '../../src/migration/multifd/format.js';
import { digest, migrationStatus, randomRamFile, side, until, type Side } from '../helpers/migration.js';
import { qemuInstalled, startQemu } from '../helpers/qemu.js';
import { QmpClient } from '../helpers/qmp-client.js';
import { below, rng } from '../helpers/rng.js';
import { setupStream } from '../helpers/stream-gen.js';

const VECTORS = join(REPO, 'test', 'fixtures', 'vectors');
const expected = JSON.parse(readFileSync(join(VECTORS, 'expected.json'), 'utf8')) as Record<
  string,
  { ram_size: number; block: string; ram_sha256: string; nonzero_page_offsets?: number[]; pages_file?: string; ram_file?: string }
>;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A destination waiting with `--incoming defer`, events on, then fed `uri`. */
async function receive(memory: number, uri: string, ramId = 'm'): Promise<Side> {
  const dst = await side(['-m', String(memory), '--ram-id', ramId, '--incoming', 'defer']);
  await dst.qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
  await dst.qmp.ok('migrate-incoming', { uri });
  return dst;
}

// The 7.2 captures, into a daemon of the default profile (7.2); stream-releases.test.ts loads
// the 10.0 ones into a 10.0 daemon.
for (const [name, v] of Object.entries(expected).filter(([name]) => name.startsWith('qemu72-'))) {
  t.test(`QEMU 7.2 vector ${name} loads into the expected RAM`, async (t) => {
    const dst = await receive(v.ram_size, `exec:cat ${join(VECTORS, `${name}.stream`)}`, v.block);
    t.teardown(() => dst.daemon.stop());
    t.ok(dst.qmp.events.some((e) => e.event === 'MIGRATION' && (e.data as { status: string }).status === 'setup'), 'migrate-incoming announces setup');
    await migrationStatus(dst, 'completed');
    t.equal(await digest(dst), v.ram_sha256, 'RAM SHA-256 as expected.json says');
    const dump = join(dst.daemon.dir, 'ram.dump');
    await dst.qmp.ok('pmemsave', { val: 0, size: v.ram_size, filename: dump });
    const ram = readFileSync(dump);
    t.equal(sha256(ram), v.ram_sha256, 'pmemsave writes the same RAM');
    if (v.ram_file) t.ok(ram.equals(readFileSync(join(VECTORS, v.ram_file))), 'identical to the source RAM image');
    if (v.pages_file) {
      const pages = readFileSync(join(VECTORS, v.pages_file));
      v.nonzero_page_offsets!.forEach((off, i) => {
        t.ok(ram.subarray(off, off + 4096).equals(pages.subarray(i * 4096, (i + 1) * 4096)), `page at 0x${off.toString(16)}`);
      });
    }
  });
}

t.test('a qmigd stream through a file and through a unix socket', async (t) => {
  const dir = tempDir();
  const file = join(dir, 'guest.stream');
  const src = await side(['-m', '32M', '--ram-id', 'm', '--memory-file', await randomRamFile(32 << 20), '--dirty-rate', '2M']);
  t.teardown(() => src.daemon.stop());
  await src.qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
  await src.qmp.ok('migrate', { uri: `exec:cat > ${file}` });
  await migrationStatus(src, 'completed');
  const want = await digest(src);

  const fromFile = await receive(32 << 20, `exec:cat ${file}`);
  t.teardown(() => fromFile.daemon.stop());
  await migrationStatus(fromFile, 'completed');
  t.equal(await digest(fromFile), want, 'file → qmigd');

  // The loaded guest goes on, over a unix socket, to a third daemon.
  const sock = join(dir, 'mig.sock');
  const third = await receive(32 << 20, `unix:${sock}`);
  t.teardown(() => third.daemon.stop());
  await fromFile.qmp.ok('migrate', { uri: `unix:${sock}` });
  await migrationStatus(fromFile, 'completed');
  await migrationStatus(third, 'completed');
  t.equal(await digest(third), want, 'qmigd → unix socket → qmigd');
  if (qemuInstalled()) {
    t.test('and a real QEMU 7.2 loads the same file into the same RAM', async (t) => {
      const qemu = await startQemu(['-M', 'none,memory-backend=m', '-object', 'memory-backend-ram,id=m,size=32M', '-m', '32M', '-incoming', `exec:cat ${file}`]);
      t.teardown(() => qemu.stop());
      const c = await QmpClient.unix(qemu.socket);
      await c.negotiate();
      const end = await until(async () => (await c.ok('query-migrate')) as { status?: string }, (i) => i.status === 'completed' || i.status === 'failed', 'QEMU loading the stream');
      t.equal(end.status, 'completed');
      const dump = join(dir, 'qemu.dump');
      await c.ok('pmemsave', { val: 0, size: 32 << 20, filename: dump });
      t.equal(sha256(readFileSync(dump)), want, 'QEMU 7.2 RAM equals the qmigd source');
      c.close();
    });
  }
});

/**
 * Runs a destination on `stream`; resolves with its exit code and log, or code 0 once it
 * reports the migration completed (a stream damaged only inside page contents is valid).
 */
async function loadCorrupt(stream: Buffer, memory = 64 << 20): Promise<{ code: number | null; log: string }> {
  const dir = tempDir();
  const file = join(dir, 'bad.stream');
  writeFileSync(file, stream);
  const d = await startDaemon(['-m', String(memory), '--ram-id', 'm', '--incoming', `exec:cat ${file}`]);
  const completed = (async (): Promise<{ code: number }> => {
    try {
      const c = await QmpClient.at(d.listening[0]!);
      await c.negotiate();
      for (;;) {
        if (((await c.ok('query-migrate')) as { status?: string }).status === 'completed') return { code: 0 };
        await new Promise((r) => setTimeout(r, 20));
      }
    } catch {
      return new Promise<never>(() => undefined); // the daemon exited: `exited` answers instead
    }
  })();
  const { code } = await Promise.race([d.exited, completed]);
  const log = d.stderr();
  await d.stop();
  return { code, log };
}

t.test('fd:N: a stream on a descriptor the daemon inherited', async (t) => {
  const dir = tempDir();
  const sock = join(dir, 'qmp.sock');
  const proc = spawn(process.execPath, [BIN, '--qmp', `unix:${sock},server=on,wait=off`, '-m', '2M', '--ram-id', 'm', '--incoming', 'fd:3'], {
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => proc.kill('SIGKILL'));
  let log = '';
  proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const channel = proc.stdio[3] as NodeJS.WritableStream;
  channel.end(readFileSync(join(VECTORS, 'qemu72-none-mixed-2M.stream')));
  while (!log.includes('incoming migration completed')) {
    if (log.includes('"level":50')) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  t.notMatch(log, /"level":50/, 'no error logged');
  const c = await QmpClient.unix(sock);
  await c.negotiate();
  t.equal(((await c.ok('__org.qmigd_query-ram-digest')) as { sha256: string }).sha256, expected['qemu72-none-mixed-2M']!.ram_sha256);
  c.close();
});

t.test('corrupt streams: the destination exits 1 with QEMU 7.2 reasons', async (t) => {
  const plain = readFileSync(join(VECTORS, 'qemu72-none-plain-64M.stream'));
  const patch = (at: number, bytes: number[]): Buffer => {
    const b = Buffer.from(plain);
    b.set(bytes, at);
    return b;
  };
  const insert = (at: number, bytes: number[]): Buffer => Buffer.concat([plain.subarray(0, at), Buffer.from(bytes), plain.subarray(at)]);
  const cases: Array<[string, Buffer, RegExp[], number?]> = [
    ['bad magic', patch(0, [0x51, 0x45, 0x56, 0x4e]), [/Not a migration stream/, /Invalid argument/]],
    ['stream version 2', patch(4, [0, 0, 0, 2]), [/SaveVM v2 format is obsolete/, /Operation not supported/]],
    ['no configuration section', patch(8, [0x01]), [/Configuration section missing/]],
    ['another machine', patch(0x0d, [0x70, 0x63]), [/Machine type received is 'pcne' and local is 'none'/]],
    ['unknown RAM block', patch(0x2b, [0x78]), [/Unknown ramblock \\"x\\", cannot accept migration/, /error while loading state for instance 0x0 of device 'ram'/]],
    ['RAM size mismatch', plain, [/Size mismatch: m: 0x4000000 != 0x2000000/], 32 << 20],
    ['RAM section version 5', patch(0x1e, [0, 0, 0, 5]), [/savevm: unsupported version 5 for 'ram' v4/]],
    ['missing footer', patch(0x3c, [0x7f]), [/Missing section footer for ram/]],
    ['MULTIFD_FLUSH record (8.0+)', patch(0x46, [0, 0, 0, 0, 0, 0, 0x02, 0x00]), [/Unknown combination of migration flags: 0x200/]],
    ['command 11 (10.0+)', insert(0x11, [0x08, 0x00, 0x0b, 0x00, 0x00]), [/MIG_CMD 0xb unknown \(len 0x0\)/]],
    ['CONTINUE before any named page', patch(0x46, [0, 0, 0, 0, 0, 0, 0, 0x28]), [/Ack, bad migration stream!/]],
    ['truncated inside a RAM section', plain.subarray(0, 5000), [/error while loading state section id 2\(ram\)/, /load of migration failed: Input\/output error/]],
    // In a record's header 7.2 reads the missing bytes as zeros (as QEMU 7.2 does, fed the same cut).
    ['truncated inside a RAM record header', plain.subarray(0, 0x46 + 3), [/Unknown combination of migration flags: 0x0/, /load of migration failed: Invalid argument/]],
    ['empty stream', Buffer.alloc(0), [/Not a migration stream/]],
  ];
  for (const [what, stream, patterns, memory] of cases) {
    const { code, log } = await loadCorrupt(stream, memory);
    t.equal(code, 1, `${what}: exit 1`);
    for (const p of patterns) t.match(log, p, `${what}: ${p.source}`);
    t.notMatch(log, /at .*\.js:\d+/, `${what}: a reason, not a stack trace`);
  }
});

// With --page-thread on the setup section loads on the load thread where it is up, and the failed
// sync at its EOS comes back to it from the main thread: the same report.
for (const thread of ['off', 'on']) {
  t.test(`multifd (--page-thread ${thread}): a corrupt packet on a channel thread makes the destination exit 1 with the reason`, async (t) => {
    const port = await freePort();
    const dst = await side(['-m', '4M', '--ram-id', 'm', '--incoming', 'defer', '--page-thread', thread]);
    t.teardown(() => dst.daemon.stop());
    await dst.qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
    await dst.qmp.ok('migrate-incoming', { uri: `tcp:127.0.0.1:${port}` });
    await threadsSettled(dst.daemon.proc.pid!); // the load thread, booted as it listens, is up
    // The main stream up to the setup section's EOS, where the destination waits for every
    // channel's SYNC; channel 1 sends a packet with a wrong magic instead.
    const connect = async (bytes: Buffer): Promise<net.Socket> => {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      await new Promise((r) => s.once('connect', r));
      s.write(bytes);
      return s;
    };
    const sockets = [await connect(setupStream('m', 4 << 20)), await connect(encodeInit(0))];
    const bad = encodeHeader({ flags: 0, packetNum: 0n, block: 'm', offsets: [], zeroOffsets: [] });
    bad.writeUInt32BE(0xdeadbeef, 0);
    sockets.push(await connect(Buffer.concat([encodeInit(1), bad])));
    const { code } = await dst.daemon.exited;
    for (const s of sockets) s.destroy();
    t.equal(code, 1, 'the destination exits 1');
    t.match(dst.daemon.stderr(), /multifd: received packet magic deadbeef and expected magic 11223344/);
    t.match(dst.daemon.stderr(), /load of migration failed/);
    t.notMatch(dst.daemon.stderr(), /qmigd internal error|multifd sync failed/, 'no internal error');
    t.equal(dst.daemon.stderr().includes('RAM sections load on the load thread'), thread === 'on', `the load thread ${thread === 'on' ? 'took' : 'took no'} sections`);
  });
}

t.test('random damage to a real stream never crashes the destination', async (t) => {
  const mixed = readFileSync(join(VECTORS, 'qemu72-none-mixed-2M.stream'));
  const r = rng(12345);
  const rand = (n: number): number => below(r, n);
  for (let i = 0; i < 12; i++) {
    const b = Buffer.from(mixed);
    // Damage early (headers, first records) as often as deep inside the pages.
    const span = i % 2 ? b.length : 64;
    for (let k = 0; k < 4; k++) b[rand(span)] = rand(256);
    const { code, log } = await loadCorrupt(b, 2 << 20);
    if (code === 0) continue; // the damage hit page contents only: a valid stream
    t.equal(code, 1, `damaged stream ${i}: exit 1`);
    t.match(log, /load of migration failed: /, `damaged stream ${i}: QEMU's summary line`);
    t.notMatch(log, /qmigd internal error|TypeError|RangeError/, `damaged stream ${i}: no internal error`);
  }
  t.ok(existsSync(VECTORS));
});
