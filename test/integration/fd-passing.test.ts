/**
 * Descriptor passing over a unix monitor, end to end, with a client that sends descriptors as
 * libvirt does (SCM_RIGHTS, from python3): the getfd/closefd/add-fd/remove-fd/query-fdsets
 * transcript of test/fixtures/fd-transcript.ts, replies and which descriptors the process holds
 * after each step, against qmigd and (where installed) QEMU 7.2; then fd: migrations: a guest
 * saved through a pipe and loaded from the file with migrate-incoming fd:3; a live migration
 * over a TCP connection passed with getfd, with return-path and pause-before-switchover as
 * libvirt drives it; the destination's socket passed by name too; and the descriptor closed
 * when the migration ends, completed, failed or cancelled, so that the other end sees EOF.
 */
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import t from 'tap';
import { FD_STEPS } from '../fixtures/fd-transcript.js';
import { freePort, startDaemon, tempDir, unixPath } from '../helpers/daemon.js';
import { FdClient, holds, openDescriptors, type Ident, type Msg } from '../helpers/fd-client.js';
import { digest, randomRamFile, side, untilInfo, until, type Side } from '../helpers/migration.js';
import { qemuInstalled, startQemu } from '../helpers/qemu.js';
import { QmpClient } from '../helpers/qmp-client.js';

const HAVE_QEMU = qemuInstalled();
const MiB = 1 << 20;

/** The fd numbers of a process's descriptors on the files of `dir`, by file name. */
function fdsByName(pid: number, dir: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const fd of readdirSync(`/proc/${pid}/fd`).map(Number)) {
    let link: string;
    try {
      link = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    if (link.startsWith(`${dir}/`)) out.set(basename(link), fd);
  }
  return out;
}

const byName = (a: string, b: string): number => a.localeCompare(b, 'en', { numeric: true });

/** Plays FD_STEPS on the monitor at `path` of process `pid`: each step's replies and what is held after it. */
async function playSteps(path: string, pid: number): Promise<Array<{ reply: string[]; held: string[] }>> {
  const dir = tempDir();
  const held = (): string[] => [...fdsByName(pid, dir).keys()].sort(byName);
  let c = await FdClient.connect(path);
  const opened = new Set<string>();
  const out: Array<{ reply: string[]; held: string[] }> = [];
  try {
    for (const step of FD_STEPS) {
      let reply: string[] = [];
      if (step.reconnect) {
        await c.disconnect();
        await c.quit();
        c = await FdClient.connect(path);
      } else {
        for (const m of step.send ?? []) {
          for (const name of m.fds ?? []) {
            if (!opened.has(name)) await c.open(name, join(dir, name));
            opened.add(name);
          }
        }
        const from = c.lines.length;
        // "fd":"R" names a file: the process's own number for it goes out.
        const parts = (step.send ?? []).map((m) => ({
          data: m.text.replace(/"fd":"([A-Z]\d*)"/g, (_, n: string) => `"fd":${fdsByName(pid, dir).get(n) ?? -1}`),
          fds: m.fds ?? [],
        }));
        if (step.stopped) process.kill(pid, 'SIGSTOP');
        try {
          await c.op('send', { parts });
        } finally {
          if (step.stopped) process.kill(pid, 'SIGCONT');
        }
        for (let i = 0, at = from; i < (step.reply?.length ?? 0); i++) {
          at = await c.replyIndex(at);
          reply.push(c.lines[at++]!);
        }
        const names = fdsByName(pid, dir);
        const nameOf = (fd: number): string => [...names].find(([, n]) => n === fd)?.[0] ?? `?${fd}`;
        reply = reply.map((l) => l.replace(/"fd": (\d+)/g, (_, n: string) => `"fd": "${nameOf(Number(n))}"`));
      }
      // A disconnect is seen by the process a moment after the client's close.
      const want = [...step.held].sort(byName);
      for (let i = 0; i < 100 && JSON.stringify(held()) !== JSON.stringify(want); i++) await new Promise((r) => setTimeout(r, 20));
      out.push({ reply, held: held() });
    }
  } finally {
    await c.quit();
  }
  return out;
}

t.test('getfd, closefd, add-fd, remove-fd, query-fdsets: replies and held descriptors as QEMU 7.2', async (t) => {
  const targets: Array<[string, () => Promise<{ path: string; pid: number; stop: () => Promise<void> }>]> = [
    ['qmigd', async () => {
      const d = await startDaemon(['-S']);
      return { path: unixPath(d), pid: d.proc.pid!, stop: () => d.stop() };
    }],
  ];
  if (HAVE_QEMU) {
    targets.push(['QEMU 7.2', async () => {
      const q = await startQemu(['-S']);
      return { path: q.socket, pid: q.proc.pid!, stop: () => q.stop() };
    }]);
  }
  for (const [who, start] of targets) {
    const target = await start();
    try {
      const got = await playSteps(target.path, target.pid);
      FD_STEPS.forEach((step, i) => {
        const what = step.reconnect ? 'reconnect' : step.send!.map((m) => `${m.text}${m.fds ? ` +${m.fds.join(',')}` : ''}`).join(' ');
        t.same(got[i]!.reply, step.reply ?? [], `${who}: ${what}`);
        t.same(got[i]!.held, [...step.held].sort(byName), `${who}: held after ${what}`);
      });
    } finally {
      await target.stop();
    }
  }
});

t.test('descriptors wait with their bytes while the dispatcher is busy elsewhere', async (t) => {
  // Another monitor's slow command holds the in-band dispatcher: this client's two commands,
  // and the descriptors sent with the second, are read meanwhile. The first must not see them.
  const d = await startDaemon(['-S', '--test-hooks']);
  t.teardown(() => d.stop());
  const dir = tempDir();
  const busy = await QmpClient.at(d.listening[0]!);
  await busy.negotiate();
  const c = await FdClient.connect(unixPath(d));
  t.teardown(() => c.quit());
  await c.open('K', join(dir, 'K'));
  const from = busy.lines.length;
  busy.send('{"execute":"__org.qmigd_sleep","arguments":{"milliseconds":300}}');
  const at = c.lines.length;
  await c.op('send', { parts: [{ data: '{"execute":"getfd","arguments":{"fdname":"l"}}' }, { data: '{"execute":"getfd","arguments":{"fdname":"m"}}', fds: ['K'] }] });
  const i = await c.replyIndex(at);
  const [first, second] = [c.lines[i]!, await c.nextReply(i + 1)];
  t.same([first, second], ['{"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}}', '{"return": {}}']);
  t.equal(await busy.nextReply(from), '{"return": {}}', 'the slow command was still running when they came');
  busy.close();
});

/** A 64 MiB guest with random RAM, the events capability on, and a descriptor-passing client. */
async function source(extra: string[] = []): Promise<Side & { fdc: FdClient }> {
  const s = await side(['-m', '64M', '--memory-file', await randomRamFile(64 * MiB), ...extra]);
  const fdc = await FdClient.connect(unixPath(s.daemon));
  await s.qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
  return { ...s, fdc };
}

const status = async (s: Side): Promise<Msg> => (await s.qmp.ok('query-migrate')) as Msg;
const ended = (info: Msg): boolean => ['completed', 'failed', 'cancelled'].includes(info.status as string);

t.test('a guest saved through a pipe (migrate fd:NAME) loads from the file (migrate-incoming fd:3)', async (t) => {
  const src = await source();
  t.teardown(async () => {
    await src.fdc.quit();
    await src.daemon.stop();
  });
  const file = join(tempDir(), 'saved.stream');
  const pipe = await src.fdc.pipe('save');
  t.same(await src.fdc.cmd('getfd', { fdname: 'save' }, ['save.w']), { return: {} });
  await src.fdc.close('save.w'); // the daemon's is now the only writer
  await src.fdc.drain('save.r', file);
  t.ok(holds(src.daemon.proc.pid!, pipe), 'the daemon holds the pipe under its name');
  t.same(await src.fdc.cmd('migrate', { uri: 'fd:save' }), { return: {} }, 'migrate over the monitor that named it');
  const info = await untilInfo(src, ended);
  t.equal(info.status, 'completed');
  const bytes = await src.fdc.waitEnd('save.r');
  t.equal(bytes, statSync(file).size, 'the reader met the end of the stream');
  t.equal(readFileSync(file).subarray(0, 4).toString('latin1'), 'QEVM', 'a migration stream');
  t.notOk(holds(src.daemon.proc.pid!, pipe), 'the daemon closed its end');
  t.same(await src.fdc.cmd('closefd', { fdname: 'save' }), { error: { class: 'GenericError', desc: "File descriptor named 'save' not found" } }, 'migrate took the name');
  const want = await digest(src);

  const fd = openSync(file, 'r');
  const dst = await startDaemon(['-m', '64M', '--incoming', 'defer'], { fd3: fd });
  closeSync(fd);
  t.teardown(() => dst.stop());
  const d: Side = { daemon: dst, qmp: await QmpClient.at(dst.listening[0]!) };
  await d.qmp.negotiate();
  t.same(await d.qmp.cmd('migrate-incoming', { uri: 'fd:3' }), { return: {} });
  await d.qmp.waitEvent('RESUME');
  t.equal(await digest(d), want, 'the RAM loaded is the RAM saved');
  await until(async () => openDescriptors(dst.proc.pid!).includes(file), (held) => !held, 'the destination closing fd 3');
  d.qmp.close();
});

t.test('a destination closes its descriptor when the load is done, though the source keeps its end open', async (t) => {
  const src = await source();
  const file = join(tempDir(), 'saved.stream');
  await src.fdc.open('f', file);
  await src.fdc.ok('getfd', { fdname: 'f' }, ['f']);
  await src.fdc.close('f');
  await src.fdc.ok('migrate', { uri: 'fd:f' });
  t.equal((await untilInfo(src, ended)).status, 'completed', 'saved to a regular file');
  const want = await digest(src);
  await src.fdc.quit();
  await src.daemon.stop();

  const dst = await source(['--incoming', 'defer']);
  t.teardown(async () => {
    await dst.fdc.quit();
    await dst.daemon.stop();
  });
  const pair = await dst.fdc.socketpair('s');
  await dst.fdc.ok('getfd', { fdname: 'in' }, ['s.b']);
  await dst.fdc.close('s.b');
  await dst.fdc.ok('migrate-incoming', { uri: 'fd:in' });
  await dst.fdc.feed('s.a', file); // and s.a stays open: no end of stream from this side
  await dst.qmp.waitEvent('RESUME');
  t.equal(await digest(dst), want, 'the RAM loaded is the RAM saved');
  await until(async () => holds(dst.daemon.proc.pid!, pair.b), (h) => !h, 'the destination closing its socket');
  await dst.fdc.drain('s.a');
  await dst.fdc.waitEnd('s.a');
  t.pass('closed, and the source sees the end');
});

t.test('live migration over a TCP connection passed with getfd: return-path, pause-before-switchover, migrate-continue', async (t) => {
  const port = await freePort();
  const dst = await side(['-m', '64M', '--incoming', `tcp:127.0.0.1:${port}`]);
  const src = await source();
  t.teardown(async () => {
    await src.fdc.quit();
    dst.qmp.close();
    await Promise.all([src.daemon.stop(), dst.daemon.stop()]);
  });
  for (const s of [src, dst]) {
    await s.qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'return-path', state: true }] });
  }
  await src.qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'pause-before-switchover', state: true }] });
  // As libvirt: it connects to the destination itself and hands the socket over.
  const conn = await src.fdc.tcp('mig', port);
  t.same(await src.fdc.cmd('getfd', { fdname: 'migrate' }, ['mig']), { return: {} });
  await src.fdc.close('mig');
  t.same(await src.fdc.cmd('migrate', { detach: true, resume: false, uri: 'fd:migrate' }), { return: {} });
  await src.qmp.waitEvent('MIGRATION', (d) => d.status === 'pre-switchover');
  t.equal((await status(src)).status, 'pre-switchover');
  t.same(await src.qmp.cmd('migrate-continue', { state: 'pre-switchover' }), { return: {} });
  await src.qmp.waitEvent('MIGRATION', (d) => d.status === 'completed');
  await dst.qmp.waitEvent('RESUME');
  t.equal(await digest(dst), await digest(src), 'RAM digests equal');
  await until(async () => holds(src.daemon.proc.pid!, conn), (h) => !h, 'the source closing the socket');
  t.pass('the source closed the socket when the migration completed');
});

t.test('the destination takes its socket by name (migrate-incoming fd:NAME); the return path works both ways', async (t) => {
  const dst = await source(['--incoming', 'defer']);
  const src = await source();
  t.teardown(async () => {
    await Promise.all([src.fdc.quit(), dst.fdc.quit()]);
    await Promise.all([src.daemon.stop(), dst.daemon.stop()]);
  });
  for (const s of [src, dst]) {
    await s.qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'return-path', state: true }] });
  }
  const port = await dst.fdc.listen('l');
  const out = await src.fdc.tcp('out', port);
  const inn = await dst.fdc.accept('l', 'in');
  t.same(await dst.fdc.cmd('getfd', { fdname: 'incoming' }, ['in']), { return: {} });
  t.same(await dst.fdc.cmd('migrate-incoming', { uri: 'fd:incoming' }), { return: {} });
  t.same(await dst.fdc.cmd('closefd', { fdname: 'incoming' }), { error: { class: 'GenericError', desc: "File descriptor named 'incoming' not found" } }, 'migrate-incoming took the name');
  t.same(await src.fdc.cmd('getfd', { fdname: 'out' }, ['out']), { return: {} });
  await Promise.all([src.fdc.close('out'), dst.fdc.close('in')]);
  t.same(await src.fdc.cmd('migrate', { uri: 'fd:out' }), { return: {} });
  const info = await untilInfo(src, ended);
  t.equal(info.status, 'completed', 'completed: the destination answered the return path (PONG, SHUT)');
  await dst.qmp.waitEvent('RESUME');
  t.equal(await digest(dst), await digest(src));
  await until(async () => holds(src.daemon.proc.pid!, out) || holds(dst.daemon.proc.pid!, inn), (h) => !h, 'both sides closing their sockets');
  t.pass('both sides closed their descriptors');
});

t.test('the descriptor is closed when a migration fails or is cancelled, and the reader sees the end', async (t) => {
  const src = await source();
  t.teardown(async () => {
    await src.fdc.quit();
    await src.daemon.stop();
  });
  const pid = src.daemon.proc.pid!;
  // Slow, so that it is still running when the reader goes or the cancel comes.
  await src.qmp.ok('migrate-set-parameters', { 'max-bandwidth': 4 * MiB });

  // The reader goes away: the next write fails with EPIPE, as QEMU's file channel reports it.
  let pipe: Ident = await src.fdc.pipe('p1');
  await src.fdc.ok('getfd', { fdname: 'p1' }, ['p1.w']);
  await src.fdc.close('p1.w');
  let from = src.qmp.events.length;
  await src.fdc.ok('migrate', { uri: 'fd:p1' });
  await src.qmp.waitEvent('MIGRATION', (d) => d.status === 'active', from);
  await src.fdc.close('p1.r');
  let info = await untilInfo(src, ended);
  t.same([info.status, info['error-desc']], ['failed', 'Unable to write to file: Broken pipe'], 'failed: the reader closed the pipe');
  await until(async () => holds(pid, pipe), (h) => !h, 'the daemon closing the pipe');

  // Cancelled: the reader, still reading, meets the end.
  pipe = await src.fdc.pipe('p2');
  await src.fdc.ok('getfd', { fdname: 'p2' }, ['p2.w']);
  await src.fdc.close('p2.w');
  await src.fdc.drain('p2.r');
  from = src.qmp.events.length;
  await src.fdc.ok('migrate', { uri: 'fd:p2' });
  await src.qmp.waitEvent('MIGRATION', (d) => d.status === 'active', from);
  await src.qmp.ok('migrate_cancel');
  info = await untilInfo(src, ended);
  t.equal(info.status, 'cancelled');
  t.ok((await src.fdc.waitEnd('p2.r')) > 0, 'the reader saw bytes, then the end');
  t.notOk(holds(pid, pipe), 'the daemon closed the pipe');

  // A socket: cancelled, the peer sees the end too.
  const pair = await src.fdc.socketpair('s');
  await src.fdc.ok('getfd', { fdname: 's' }, ['s.a']);
  await src.fdc.close('s.a');
  await src.fdc.drain('s.b');
  from = src.qmp.events.length;
  await src.fdc.ok('migrate', { uri: 'fd:s' });
  await src.qmp.waitEvent('MIGRATION', (d) => d.status === 'active', from);
  await src.qmp.ok('migrate_cancel');
  t.equal((await untilInfo(src, ended)).status, 'cancelled');
  await src.fdc.waitEnd('s.b');
  t.notOk(holds(pid, pair.a), 'the daemon closed its end of the socket pair');

  // A socket whose peer goes: failed, and closed.
  const pair2 = await src.fdc.socketpair('t');
  await src.fdc.ok('getfd', { fdname: 't' }, ['t.a']);
  await src.fdc.close('t.a');
  from = src.qmp.events.length;
  await src.fdc.ok('migrate', { uri: 'fd:t' });
  await src.qmp.waitEvent('MIGRATION', (d) => d.status === 'active', from);
  await src.fdc.close('t.b');
  t.equal((await untilInfo(src, ended)).status, 'failed');
  await until(async () => holds(pid, pair2.a), (h) => !h, 'the daemon closing the socket');
  t.equal(await src.qmp.ok('query-status').then((s) => (s as Msg).status), 'running', 'the guest runs on after each');
});

t.test('a pipe with return-path fails as QEMU 7.2 fails it: the return path closes the descriptor', async (t) => {
  const src = await source();
  t.teardown(async () => {
    await src.fdc.quit();
    await src.daemon.stop();
  });
  await src.qmp.ok('migrate-set-capabilities', { capabilities: [{ capability: 'return-path', state: true }] });
  const pipe = await src.fdc.pipe('p');
  await src.fdc.ok('getfd', { fdname: 'p' }, ['p.w']);
  await src.fdc.close('p.w');
  await src.fdc.drain('p.r');
  await src.fdc.ok('migrate', { uri: 'fd:p' });
  const info = await untilInfo(src, ended);
  t.same([info.status, info['error-desc']], ['failed', 'Unable to write to file: Bad file descriptor']);
  await src.fdc.waitEnd('p.r');
  t.notOk(holds(src.daemon.proc.pid!, pipe));
});

t.test('limits: 16 descriptors per message, a bounded number of names per monitor', async (t) => {
  const d = await startDaemon(['-S']);
  t.teardown(() => d.stop());
  const dir = tempDir();
  const c = await FdClient.connect(unixPath(d));
  t.teardown(() => c.quit());
  const names = Array.from({ length: 20 }, (_, i) => `F${i}`);
  for (const n of names) await c.open(n, join(dir, n));
  await c.ok('query-status', undefined, names);
  await until(async () => d.stderr(), (e) => e.includes('client sent more than 16 descriptors with one message'), 'the warn line');
  t.equal([...fdsByName(d.proc.pid!, dir).keys()].length, 16, 'the daemon holds 16 of the 20');
  for (let i = 0; i < 64; i++) await c.ok('getfd', { fdname: `n${i}` }, ['F0']);
  t.same(await c.cmd('getfd', { fdname: 'n64' }, ['F1']), {
    error: { class: 'GenericError', desc: 'qmigd keeps at most 64 named file descriptors per monitor; close some with closefd' },
  });
  t.same(await c.cmd('getfd', { fdname: 'n0' }, ['F2']), { return: {} }, 'a name in use may still be given a new descriptor');
  t.match(d.stderr(), /getfd refused: the monitor holds as many named descriptors as qmigd keeps/);
  const held = openDescriptors(d.proc.pid!).filter((l) => l.startsWith(`${dir}/`));
  t.equal(held.length, 64, '64 named, the refused one closed');
});
