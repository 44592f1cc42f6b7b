/**
 * libvirt 9.0 live-migrates guests of each emulator under test (bin/qmigd-qemu, and the real QEMU
 * 7.2 to show that the expectations are QEMU's: EMULATORS in ../helpers/libvirt.ts) between two
 * private libvirtd daemons, each on a test host of its own (network, mount, UTS and pid namespaces, its own
 * hostname and host UUID), joined by a veth pair with unique local addresses made at run time:
 *
 * - `virsh migrate --live DOM qemu+tcp://PEER/system --migrateuri tcp://PEER` (virsh drives
 *   both daemons) one way, and `--live --p2p` (the source daemon drives) back;
 * - a paused guest arrives paused, with the same RAM (`ramDigest`, the RAM-equality hook);
 * - a guest dirtying its RAM (qmigd's workload) through a bandwidth-capped live migration, paused
 *   after a second pass to read its RAM, arrives with that RAM;
 * - `domjobinfo` while a migration runs over a slowed link, and `migrate-setspeed` during it;
 * - the destination's emulator killed mid-way: libvirt reports the failure, the source domain
 *   keeps running, and a second attempt succeeds.
 *
 * The last step ends both hosts and asserts that nothing is left and that the machine is as it
 * was. Skipped where libvirtd/virsh/ip/tc are missing, not root, or namespaces or veth pairs are
 * unavailable.
 */
import t from 'tap';
import {
  EMULATORS, TestHost, commandsSent, connectHosts, eventsSeen, isQemu, libvirtSkip, machineState, migrateArgs, parseSize, ramDigest, waitFor,
  describe as describeRun, type Link, type QmpRecord, type RunResult,
} from '../helpers/libvirt.js';

/** A test object as tap passes it to a subtest callback. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];


/** The link speed (kbit/s) while a test wants to watch a migration in flight. */
const SLOW_KBIT = 256;
/** The guest's dirtying workload (bytes/s) and the bandwidth (MiB/s) that keeps a migration iterating under it. */
const DIRTY_RATE = 32 * 1024 * 1024;
const DIRTY_BANDWIDTH_MIB = 8;

const sent = (recs: QmpRecord[], execute: string): QmpRecord[] => recs.filter((r) => r.kind === 'send' && r.json?.execute === execute);

for (const emulator of EMULATORS) t.test(`libvirt 9.0 migrates ${emulator} guests between two daemons`, { skip: libvirtSkip(emulator, { network: true }), timeout: 240000 }, async (t) => {
  const before = machineState();
  const started = await Promise.allSettled([TestHost.start({ name: 'src', listen: true }), TestHost.start({ name: 'dst', listen: true })]);
  const hosts = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  t.teardown(async () => {
    for (const h of hosts) await h.stop();
  });
  for (const s of started) if (s.status === 'rejected') throw s.reason;
  const [a, b] = hosts as [TestHost, TestHost];
  const link: Link = await connectHosts(a, b);
  t.teardown(async () => {
    // A failed test may leave the link slow; the hosts end anyway, this only keeps stop() quick.
    await link.unlimit(a).catch(() => undefined);
    await link.unlimit(b).catch(() => undefined);
  });
  t.comment(`${a.hostname} [${a.address}] ↔ ${b.hostname} [${b.address}]`);

  /** A subtest that reports its duration. */
  const step = (name: string, fn: (t: Test) => Promise<void>, skip: string | false = false): Promise<unknown> =>
    t.test(name, { skip }, async (t) => {
      const t0 = Date.now();
      await fn(t);
      t.comment(`${name}: ${Date.now() - t0} ms`);
    });

  /** Defines `dom` on a and starts it. */
  const boot = async (dom: string): Promise<void> => {
    await a.define(dom, emulator);
    await a.virshOk(['start', dom], { timeout: 60000 });
    await a.waitState(dom, 'running');
  };

  /** Waits until a's migration job of `dom` has moved some data, and returns its domjobinfo. */
  const inFlight = (dom: string, pending: Promise<unknown>): Promise<Record<string, string>> => {
    let done = false;
    void pending.then(() => (done = true));
    return waitFor(`${dom}'s migration to be under way`, 30000, async () => {
      if (done) throw new Error('the migration ended before it could be watched');
      const job = await a.domjobinfo(dom);
      return job['Job type'] === 'Unbounded' && parseSize(job['Data processed']) > 0 ? job : undefined;
    }, 50);
  };

  await step('migrate --live (virsh drives both daemons), then --live --p2p back (the source daemon drives)', async (t) => {
    const dom = 'mig-live';
    await boot(dom);
    let markA = a.logMark();
    let markB = b.logMark();
    const there = await a.virsh(migrateArgs(b, dom), { timeout: 60000 });
    t.equal(there.code, 0, describeRun(there));
    t.same(await a.domstate(dom), { state: 'shut off', reason: 'migrated' }, 'the source definition stays, shut off');
    t.same(await b.domstate(dom), { state: 'running', reason: 'migrated' });
    t.comment(`a → b: ${there.ms} ms`);

    // What libvirt asked of both emulators (migrate-source/-dest in the reference).
    const src = a.qmp(markA);
    const dst = b.qmp(markB);
    t.match(sent(src, 'migrate-set-capabilities').map((r) => r.json?.arguments), [{ capabilities: [] }], 'source: capabilities set');
    t.ok(sent(src, 'getfd').some((r) => r.fd! >= 0), 'source: getfd with the socket libvirt connected itself');
    t.match(sent(src, 'migrate')[0]?.json?.arguments, { uri: 'fd:migrate' });
    t.match(sent(src, 'migrate-continue')[0]?.json?.arguments, { state: 'pre-switchover' }, 'source: pause-before-switchover, then migrate-continue');
    t.ok(eventsSeen(src).includes('MIGRATION:completed'), 'source: MIGRATION completed');
    t.match(sent(dst, 'migrate-incoming')[0]?.json?.arguments, { uri: /^tcp:/ }, 'destination: migrate-incoming on tcp');
    t.match(b.domainLog(dom), /-incoming defer/, 'destination: started with -incoming defer');
    t.ok(eventsSeen(dst).includes('MIGRATION:completed'), 'destination: MIGRATION completed');
    t.ok(commandsSent(dst).includes('cont'), 'destination: cont');

    markA = a.logMark();
    markB = b.logMark();
    const back = await b.virsh(migrateArgs(a, dom, { p2p: true }), { timeout: 60000 });
    t.equal(back.code, 0, describeRun(back));
    t.same(await a.domstate(dom), { state: 'running', reason: 'migrated' });
    t.same(await b.domains(), [], 'the transient domain left b');
    t.ok(eventsSeen(b.qmp(markB)).includes('MIGRATION:completed'));
    t.ok(commandsSent(a.qmp(markA)).includes('migrate-incoming'));
    t.comment(`b → a (p2p): ${back.ms} ms`);
    await a.virshOk(['destroy', dom]);
  });

  await step('a paused guest arrives paused, with the same RAM', async (t) => {
    const dom = 'mig-ram';
    await boot(dom);
    await a.virshOk(['suspend', dom]);
    const ram = await ramDigest(a, dom);
    t.comment(`RAM: ${ram}`);
    const r = await a.virsh(migrateArgs(b, dom, { p2p: true }), { timeout: 60000 });
    t.equal(r.code, 0, describeRun(r));
    // libvirt 9.0 carries the pause over, with the source's reason.
    t.same(await b.domstate(dom), { state: 'paused', reason: 'user' });
    t.equal(await ramDigest(b, dom), ram, 'RAM on arrival = RAM before');
    await b.virshOk(['resume', dom]);
    t.same(await b.domstate(dom), { state: 'running', reason: 'unpaused' });
    await b.virshOk(['destroy', dom]);
  });

  // Only qmigd's guest can be given a workload: QEMU's, in this domain, runs its firmware alone.
  await step('a guest dirtying its RAM through a live migration arrives with the source\'s RAM', async (t) => {
    const dom = 'mig-dirty';
    await boot(dom);
    const monitor = (execute: string, args?: object): Promise<string> =>
      a.virshOk(['qemu-monitor-command', dom, JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })], { timeout: 30000 });
    // Pages of the first half of RAM written over and over, faster than the migration can send them.
    await monitor('__org.qmigd_set-workload', { rate: DIRTY_RATE, pattern: 'hot:50' });
    await new Promise((r) => setTimeout(r, 1000));
    // Slow enough that the guest dirties pages already sent; then paused, so that its RAM can be read
    // on the source (libvirt lets qemu-monitor-command in during a migration) before it ends there.
    const pending = a.virsh(migrateArgs(b, dom, { extra: ['--bandwidth', String(DIRTY_BANDWIDTH_MIB), '--suspend'] }), { timeout: 90000 });
    let ended = false;
    void pending.then(() => (ended = true));
    let ram: string;
    try {
      await waitFor('a second pass over the RAM while the guest runs', 60000, async () => {
        if (ended) throw new Error('the migration ended while the guest ran');
        const job = await a.domjobinfo(dom);
        return Number(job.Iteration) >= 2 ? job : undefined;
      }, 100);
      t.equal((await a.domstate(dom)).state, 'running', 'the guest ran through the first pass');
      await a.virshOk(['suspend', dom]);
      ram = await ramDigest(a, dom);
      t.comment(`RAM at the pause: ${ram}`);
    } finally {
      await a.virsh(['migrate-setspeed', dom, '8192']).catch(() => undefined);
    }
    const r = await pending;
    t.equal(r.code, 0, describeRun(r));
    const done = await a.domjobinfo(dom, true);
    t.ok(Number(done.Iteration) >= 2, `passes over the RAM: ${done.Iteration}`);
    t.ok(parseSize(done['Memory processed']) > parseSize(done['Memory total']) / 2, `memory processed: ${done['Memory processed']} of ${done['Memory total']} (dirtied pages sent again)`);
    // --suspend: libvirt does not resume it there, so the RAM read is the RAM that arrived.
    t.equal((await b.domstate(dom)).state, 'paused');
    t.equal(await ramDigest(b, dom), ram, 'RAM on arrival = RAM of the source at its pause');
    await b.virshOk(['destroy', dom]);
  }, isQemu(emulator) && 'QEMU\'s guest here runs only its firmware: nothing to dirty its RAM');

  await step('domjobinfo while a migration runs; migrate-setspeed during it', async (t) => {
    const dom = 'mig-job';
    await boot(dom);
    await link.limit(a, SLOW_KBIT);
    const markA = a.logMark();
    const pending = a.virsh(migrateArgs(b, dom, { extra: ['--bandwidth', '1'] }), { timeout: 90000 });
    try {
      const job = await inFlight(dom, pending);
      t.equal(job.Operation, 'Outgoing migration');
      t.ok(parseSize(job['Data processed']) > 0, `data processed: ${job['Data processed']}`);
      // That guest's RAM is nearly all zero pages, so the pass may be over by this first look.
      const remaining = parseSize(job['Data remaining']);
      t.ok(remaining >= 0 && remaining <= parseSize(job['Memory total']), `data remaining: ${job['Data remaining']}`);
      t.ok(parseSize(job['Memory total']) >= 64 * 1024 * 1024, `memory total: ${job['Memory total']}`);
      t.ok(Number(job['Time elapsed']?.split(/\s/)[0]) >= 0, `time elapsed: ${job['Time elapsed']}`);
      t.equal((await a.virshOk(['migrate-getspeed', dom])).trim(), '1', '--bandwidth 1: 1 MiB/s');
      await a.virshOk(['migrate-setspeed', dom, '64']);
      t.equal((await a.virshOk(['migrate-getspeed', dom])).trim(), '64');
      const speeds = sent(a.qmp(markA), 'migrate-set-parameters').map((r) => (r.json?.arguments as { 'max-bandwidth'?: number })['max-bandwidth']);
      t.ok(speeds.includes(1024 * 1024), 'QMP: max-bandwidth 1 MiB/s at the start');
      t.ok(speeds.includes(64 * 1024 * 1024), 'QMP: max-bandwidth 64 MiB/s while it runs');
    } finally {
      await link.unlimit(a);
    }
    const r = await pending;
    t.equal(r.code, 0, describeRun(r));
    const done = await a.domjobinfo(dom, true);
    t.equal(done['Job type'], 'Completed');
    t.equal(done.Operation, 'Outgoing migration');
    t.ok(parseSize(done['Data total']) >= 64 * 1024 * 1024, `completed: data total ${done['Data total']}, downtime ${done['Total downtime']}`);
    t.same(await b.domstate(dom), { state: 'running', reason: 'migrated' });
    await b.virshOk(['destroy', dom]);
  });

  await step('the destination\'s emulator dies mid-way: libvirt says so, the source keeps running', async (t) => {
    const dom = 'mig-kill';
    await boot(dom);
    await link.limit(a, SLOW_KBIT);
    const pending = a.virsh(migrateArgs(b, dom), { timeout: 90000 });
    let failed: RunResult;
    try {
      await inFlight(dom, pending);
      const pid = await b.killEmulator(dom, 'KILL');
      t.comment(`killed the destination's emulator (pid ${pid} on ${b.name})`);
      failed = await pending;
    } finally {
      await link.unlimit(a);
    }
    t.not(failed.code, 0, 'virsh migrate fails');
    t.match(failed.stderr, /^error: /m, `libvirt reports it: ${failed.stderr.trim()}`);
    t.equal((await a.domstate(dom)).state, 'running', 'the source keeps running');
    t.notOk((await b.domains()).includes(dom), 'nothing is left of it on the destination');
    // The source is intact: it migrates again.
    const again = await a.virsh(migrateArgs(b, dom, { p2p: true }), { timeout: 60000 });
    t.equal(again.code, 0, describeRun(again));
    t.same(await b.domstate(dom), { state: 'running', reason: 'migrated' });
    await b.virshOk(['destroy', dom]);
  });

  await step('the hosts end and leave nothing behind', async (t) => {
    for (const h of [a, b]) {
      t.same(await h.stop(), [], `${h.name}: stop() cleaned up everything`);
      t.same(h.processes(), [], `${h.name}: no process left in its namespaces`);
    }
    t.equal(machineState(), before, 'the machine\'s libvirt directories, passwd, group, netns list and links are unchanged');
  });
});
