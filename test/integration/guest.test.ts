/**
 * The emulated guest: RAM from --memory-file, the workload and its run-time control, pmemsave,
 * the RAM digest, and the pre-6.0 migration commands that qmigd keeps.
 */
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { REPO, rssKiB } from '../helpers/daemon.js';
import { digest, side } from '../helpers/migration.js';
import type { Msg } from '../helpers/qmp-client.js';

const RAM_FILE = join(REPO, 'test', 'fixtures', 'vectors', 'qemu72-none-mixed-2M.ram');

t.test('RAM starts as --memory-file; pmemsave and the digest read it back', async (t) => {
  const g = await side(['-m', '2M', '--memory-file', RAM_FILE, '-S']);
  t.teardown(() => g.daemon.stop());
  const image = readFileSync(RAM_FILE);
  t.same(await g.qmp.ok('__org.qmigd_query-ram-digest'), { sha256: createHash('sha256').update(image).digest('hex'), size: image.length });
  const out = join(g.daemon.dir, 'part.bin');
  // A window that starts inside RAM and runs past its end: the tail reads as zeros.
  await g.qmp.ok('pmemsave', { val: (2 << 20) - 4096, size: 8192, filename: out });
  const got = readFileSync(out);
  t.ok(got.subarray(0, 4096).equals(image.subarray(image.length - 4096)));
  t.ok(got.subarray(4096).equals(Buffer.alloc(4096)));
  t.match(await g.qmp.cmd('pmemsave', { val: 0, size: 4096, filename: '/nonexistent/dir/x' }), {
    error: { class: 'GenericError', desc: "Could not open '/nonexistent/dir/x': No such file or directory" },
  });
});

t.test('the workload dirties RAM only while the guest runs, at the rate and pattern set', async (t) => {
  const g = await side(['-m', '16M', '--dirty-rate', '4M', '--dirty-pattern', 'hot:10']);
  t.teardown(() => g.daemon.stop());
  const q = async (): Promise<Msg> => (await g.qmp.ok('__org.qmigd_query-workload')) as Msg;
  t.match(await q(), { rate: 4 << 20, pattern: 'hot:10', running: true, 'throttle-percentage': 0 });
  const first = await digest(g);
  let w = await q();
  while ((w['pages-dirtied'] as number) === 0) w = await q();
  t.not(await digest(g), first, 'RAM changes while the guest runs');

  await g.qmp.ok('stop');
  t.match(await q(), { running: false });
  const stopped = await digest(g);
  const dirtied = (await q())['pages-dirtied'];
  // Wait for work the workload would have done had it been running: one more digest pass.
  await digest(g);
  t.equal((await q())['pages-dirtied'], dirtied, 'no writes while stopped');
  t.equal(await digest(g), stopped, 'RAM frozen while stopped');

  await g.qmp.ok('__org.qmigd_set-workload', { rate: 0 });
  await g.qmp.ok('cont');
  t.match(await q(), { rate: 0, running: false });
  await g.qmp.ok('__org.qmigd_set-workload', { rate: 1 << 20, pattern: 'sequential' });
  t.match(await q(), { rate: 1 << 20, pattern: 'sequential', running: true });
  t.match(await g.qmp.cmd('__org.qmigd_set-workload', { rate: 1, pattern: 'hot:101' }), {
    error: { desc: "Parameter 'pattern' expects 'uniform', 'sequential' or 'hot:PERCENT' with PERCENT from 1 to 100" },
  });
  t.match(await g.qmp.cmd('__org.qmigd_set-workload', { rate: -1 }), { error: { class: 'GenericError', desc: /Parameter 'rate'/ } });
});

t.test('the pre-6.0 commands are thin wrappers over the parameters', async (t) => {
  const g = await side(['-m', '4M']);
  t.teardown(() => g.daemon.stop());
  const params = async (): Promise<Msg> => (await g.qmp.ok('query-migrate-parameters')) as Msg;
  await g.qmp.ok('migrate_set_speed', { value: 1 << 20 });
  t.equal((await params())['max-bandwidth'], 1 << 20);
  await g.qmp.ok('migrate_set_downtime', { value: 0.5 });
  t.equal((await params())['downtime-limit'], 500, 'seconds become milliseconds');
  t.match(await g.qmp.cmd('migrate_set_downtime', { value: 2001 }), {
    error: { desc: "Parameter 'downtime_limit' expects an integer in the range of 0 to 2000 seconds" },
  });
  await g.qmp.ok('migrate-set-cache-size', { value: 1 << 24 });
  t.equal(await g.qmp.ok('query-migrate-cache-size'), 1 << 24);
  t.match(await g.qmp.cmd('migrate-set-cache-size', { value: 5000 }), {
    error: { desc: "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size" },
  });
  // Beyond 2^53: a 64-bit value, answered with its id, not an internal error.
  t.equal(await g.qmp.raw('{"execute":"migrate-set-cache-size","arguments":{"value":9007199254740992},"id":5}'), '{"return": {}, "id": 5}');
  t.equal(await g.qmp.raw('{"execute":"query-migrate-cache-size"}'), '{"return": 9007199254740992}');
  await g.qmp.ok('migrate_set_speed', { value: -1 });
  t.match((await g.qmp.raw('{"execute":"query-migrate-parameters"}')), /"max-bandwidth": 18446744073709551615/, 'a negative speed wraps, as 5.2 stored it');
  t.match(await g.qmp.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'release-ram', state: true }] }), {
    error: { desc: "Migration capability 'release-ram' is not implemented by qmigd" },
  });
  t.match(await g.qmp.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'block', state: true }] }), {
    error: { desc: 'QEMU compiled without old-style (blk/-b, inc/-i) block migration' },
  });
  t.match(await g.qmp.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'release-ram', state: false }] }), { return: {} });
});

t.test('an all-zero guest travels as ZERO records, counted as duplicate pages', async (t) => {
  const src = await side(['-m', '16M']);
  t.teardown(() => src.daemon.stop());
  await src.qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
  await src.qmp.ok('migrate', { uri: `exec:cat > ${join(src.daemon.dir, 'zero.stream')}` });
  await src.qmp.waitEvent('MIGRATION', (d) => d.status === 'completed');
  const ram = ((await src.qmp.ok('query-migrate')) as Msg).ram as Record<string, number>;
  t.equal(ram.duplicate, 4096);
  t.equal(ram.normal, 0);
  // 8 + 1 + "ram" + fill for the first (named) record, 9 for each CONTINUE record after it, and
  // the 8-byte EOS of each PART section (as 7.2 counts it).
  const eos = ram.transferred - (13 + 4095 * 9);
  t.ok(eos >= 8 && eos % 8 === 0, `records plus ${eos / 8} counted EOS`);
  const stream = readFileSync(join(src.daemon.dir, 'zero.stream'));
  t.equal(stream.subarray(0, 4).toString('latin1'), 'QEVM');
});

t.test('--mem-prealloc faults all of RAM in at start-up; without it RAM stays untouched', async (t) => {
  const rss = (pid: number): number => rssKiB(pid) * 1024;
  const lazy = await side(['-m', '256M']);
  const eager = await side(['-m', '256M', '--mem-prealloc']);
  t.teardown(() => Promise.all([lazy.daemon.stop(), eager.daemon.stop()]));
  t.ok(rss(eager.daemon.proc.pid!) >= 256 * 1024 * 1024, 'preallocated: resident');
  t.ok(rss(lazy.daemon.proc.pid!) < 200 * 1024 * 1024, 'lazy: not resident');
  t.equal(await digest(eager), await digest(lazy), 'both zero');
});

t.test("--memory-file: a sparse image's zero pages travel as ZERO records, its data whole", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qmigd-sparse-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // 256 MiB: a hole, then 1 MiB of data in the middle, then a run of written zeros at the end.
  const file = join(dir, 'ram.img');
  const size = 256 << 20;
  const data = Buffer.alloc(1 << 20, 0xa5);
  writeFileSync(file, Buffer.alloc(0));
  truncateSync(file, size - (4 << 20));
  const fd = openSync(file, 'r+');
  writeSync(fd, data, 0, data.length, 128 << 20);
  writeSync(fd, Buffer.alloc(4 << 20), 0, 4 << 20, size - (4 << 20));
  closeSync(fd);
  const g = await side(['-m', '256M', '--memory-file', file, '-S']);
  t.teardown(() => g.daemon.stop());
  const image = readFileSync(file);
  t.same(await g.qmp.ok('__org.qmigd_query-ram-digest'), { sha256: createHash('sha256').update(image).digest('hex'), size }, 'the RAM is the file');
  // Every zero page of the file goes as a ZERO record (duplicate), the data pages whole.
  const dst = await side(['-m', '256M', '--incoming', 'defer']);
  t.teardown(() => dst.daemon.stop());
  await dst.qmp.ok('migrate-incoming', { uri: 'unix:' + join(dir, 'mig.sock') });
  await g.qmp.ok('migrate', { uri: 'unix:' + join(dir, 'mig.sock') });
  let info: Msg;
  do info = (await g.qmp.ok('query-migrate')) as Msg;
  while (info.status !== 'completed' && info.status !== 'failed');
  const ram = info.ram as Msg;
  t.equal(ram.normal, 256, 'the 1 MiB of data, whole');
  t.equal(ram.duplicate, 65536 - 256, 'every other page as zero');
  t.equal(await digest(dst), await digest(g), 'the destination has the file');
});
