/**
 * libvirt 9.0 drives each emulator under test (bin/qmigd-qemu, and the real QEMU 7.2 to show that
 * the expectations are QEMU's: EMULATORS in ../helpers/libvirt.ts) through a domain's life on one
 * private libvirtd: define, start, suspend, resume, save + restore (RAM compared), managedsave + start,
 * shutdown, destroy, undefine. Each step asserts the domain's state and reason as virsh reports
 * them, and the QMP libvirt held with the emulator for it (from libvirtd's log). The last step
 * ends the host and asserts that nothing is left and that the machine is as it was.
 *
 * Skipped where libvirtd/virsh are missing, not root, or namespaces are unavailable.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import {
  hasNoAcpiOption,
  EMULATORS, TestHost, commandsSent, eventsSeen, libvirtSkip, machineState, parseKeyValues, ramDigest, waitFor, type QmpRecord,
} from '../helpers/libvirt.js';

/** A test object as tap passes it to a subtest callback. */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const DOM = 'lifecycle';

const find = (recs: QmpRecord[], execute: string): QmpRecord | undefined => recs.find((r) => r.kind === 'send' && r.json?.execute === execute);

for (const emulator of EMULATORS) t.test(`libvirt 9.0 drives ${emulator} through a domain's life`, { skip: libvirtSkip(emulator), timeout: 180000 }, async (t) => {
  const before = machineState();
  const host = await TestHost.start({ name: 'life' });
  t.teardown(() => host.stop());
  t.comment(`host ${host.hostname}, pid 1 = ${host.initPid}, dir ${host.dir}`);

  /**
   * A subtest that reports its duration, with the QMP libvirt logged while it ran. Each step
   * needs the domain as the step before left it: after a failure the rest are skipped (but the
   * last, `always`).
   */
  let failed = '';
  const step = async (name: string, fn: (t: Test, qmp: () => QmpRecord[]) => Promise<void>, always = false): Promise<void> => {
    const skip = failed && !always ? `"${failed}" failed` : false;
    const res = await t.test(name, { skip }, async (t) => {
      const mark = host.logMark();
      const t0 = Date.now();
      await fn(t, () => host.qmp(mark));
      t.comment(`${name}: ${Date.now() - t0} ms`);
    });
    if (!skip && res && !res.ok && !failed) failed = name;
  };

  await step('define (libvirt probes the emulator)', async (t, qmp) => {
    await host.define(DOM, emulator);
    t.same(await host.domains(), [DOM]);
    t.same(await host.domstate(DOM), { state: 'shut off', reason: 'unknown' });
    const probe = commandsSent(qmp());
    // Defining names an emulator libvirt has not seen: it runs it with -machine none and asks.
    for (const c of ['qmp_capabilities', 'query-qmp-schema', 'query-machines', 'qom-list-types']) t.ok(probe.includes(c), `the probe asks ${c}`);
  });

  await step('start', async (t, qmp) => {
    await host.virshOk(['start', DOM], { timeout: 60000 });
    t.same(await host.domstate(DOM), { state: 'running', reason: 'booted' });
    const sent = commandsSent(qmp());
    t.equal(sent[0], 'qmp_capabilities');
    t.equal(sent.at(-1), 'cont', 'the start sequence ends with cont');
    t.ok(eventsSeen(qmp()).includes('RESUME'));
    t.match(host.domainLog(DOM), /-S\b/, 'the emulator starts paused (-S); its command line is in the domain log');
    t.same((await host.domjobinfo(DOM))['Job type'], 'None', 'no job while idle');
  });

  await step('suspend, resume', async (t, qmp) => {
    await host.virshOk(['suspend', DOM]);
    t.same(await host.domstate(DOM), { state: 'paused', reason: 'user' });
    await host.virshOk(['resume', DOM]);
    t.same(await host.domstate(DOM), { state: 'running', reason: 'unpaused' });
    t.same(commandsSent(qmp()), ['stop', 'cont']);
    t.same(eventsSeen(qmp()), ['STOP', 'RESUME']);
  });

  await step('save and restore a paused guest: the same RAM comes back', async (t, qmp) => {
    const image = join(host.workDir, `${DOM}.save`);
    await host.virshOk(['suspend', DOM]);
    const ram = await ramDigest(host, DOM);
    t.comment(`RAM before save: ${ram}`);
    await host.virshOk(['save', DOM, image], { timeout: 60000 });
    t.same(await host.domstate(DOM), { state: 'shut off', reason: 'saved' });
    t.ok(existsSync(image), 'the image is written');
    const saved = qmp();
    const getfd = find(saved, 'getfd');
    t.ok(getfd && getfd.fd! >= 0, 'getfd comes with a descriptor (SCM_RIGHTS)');
    t.match(find(saved, 'migrate')?.json?.arguments, { uri: 'fd:migrate' });
    t.ok(eventsSeen(saved).includes('MIGRATION:completed'));

    const mark = host.logMark();
    await host.virshOk(['restore', image, '--paused'], { timeout: 60000 });
    // libvirt 9.0 leaves a guest restored with --paused in reason 'migrating' (the incoming migration's pause).
    t.same(await host.domstate(DOM), { state: 'paused', reason: 'migrating' });
    const restored = host.qmp(mark);
    t.match(find(restored, 'migrate-incoming')?.json?.arguments, { uri: /^fd:\d+$/ }, 'the image comes in on an inherited descriptor');
    t.match(host.domainLog(DOM), /-incoming defer/);
    t.equal(await ramDigest(host, DOM), ram, 'RAM after restore = RAM before save');
    await host.virshOk(['resume', DOM]);
    t.same(await host.domstate(DOM), { state: 'running', reason: 'unpaused' });
  });

  await step('managedsave, then start resumes from the image', async (t, qmp) => {
    await host.virshOk(['managedsave', DOM], { timeout: 60000 });
    t.same(await host.domstate(DOM), { state: 'shut off', reason: 'saved' });
    t.equal(parseKeyValues(await host.virshOk(['dominfo', DOM]))['Managed save'], 'yes');
    await host.virshOk(['start', DOM], { timeout: 60000 });
    t.same(await host.domstate(DOM), { state: 'running', reason: 'restored' });
    t.equal(parseKeyValues(await host.virshOk(['dominfo', DOM]))['Managed save'], 'no', 'start consumed the image');
    const sent = commandsSent(qmp());
    for (const c of ['getfd', 'migrate', 'migrate-incoming', 'cont']) t.ok(sent.includes(c), `QMP: ${c}`);
  });

  // Without <acpi/> (where the emulator has -no-acpi) the power button reaches no guest OS; with
  // it the guest powers off, and libvirt ends the emulator (-no-shutdown, on_poweroff destroy).
  const acpi = !hasNoAcpiOption(emulator);
  await step(`shutdown: the button is pressed; the guest ${acpi ? 'with ACPI powers off' : 'without ACPI keeps running'}`, async (t, qmp) => {
    await host.virshOk(['shutdown', DOM]);
    t.ok(commandsSent(qmp()).includes('system_powerdown'), 'libvirt sends system_powerdown');
    await waitFor('POWERDOWN', 5000, () => (eventsSeen(qmp()).includes('POWERDOWN') ? true : undefined));
    if (acpi) {
      await host.waitState(DOM, 'shut off');
      t.same(await host.domstate(DOM), { state: 'shut off', reason: 'shutdown' });
      t.ok(eventsSeen(qmp()).includes('SHUTDOWN'), 'the guest said SHUTDOWN');
    } else {
      await new Promise((r) => setTimeout(r, 500));
      t.same(await host.domstate(DOM), { state: 'running', reason: 'restored' }, 'still running, as the managed save left it');
    }
  });

  await step('destroy, undefine', async (t, qmp) => {
    if ((await host.domstate(DOM)).state !== 'shut off') {
      await host.virshOk(['destroy', DOM], { timeout: 30000 });
      t.same(await host.domstate(DOM), { state: 'shut off', reason: 'destroyed' });
      t.ok(qmp().some((r) => r.kind === 'close'), 'the monitor closes');
    }
    await host.virshOk(['undefine', DOM, '--managed-save']);
    t.same(await host.domains(), []);
  });

  await step('the host ends and leaves nothing behind', async (t) => {
    const pids = host.processes();
    t.ok(pids.length >= 2, `the host has processes before (${pids.length})`);
    t.same(await host.stop(), [], 'stop() cleaned up everything');
    t.same(host.processes(), [], 'no process left in its namespaces');
    t.notOk(existsSync(host.dir), 'its directory is gone');
    t.equal(machineState(), before, 'the machine\'s libvirt directories, passwd, group, netns list and links are unchanged');
  }, true);
});
