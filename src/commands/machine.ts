/**
 * QAPI modules "machine" and "machine-target": what the machine is (target, KVM, UUID, machine
 * types, CPUs) and its power button and reset, as QEMU 7.2 answers them.
 *
 * query-kvm: KVM is built in (present), as in Debian's QEMU; enabled when the command line's
 * accelerator is KVM (see cli/qemu/accelerator.ts).
 */
import type { Daemon } from '../daemon/context.js';
import { cpuProps, cpuQomPath } from '../guest/cpu-topology.js';
import { machines } from '../guest/machines.js';
import { activeProfile } from '../profiles/index.js';
import { qemuData } from './qemu-data.js';

export function registerMachine(d: Daemon): void {
  const r = d.registry;
  r.register('query-target', () => ({ arch: 'x86_64' }));
  r.register('query-kvm', () => ({ enabled: d.config.accelerator === 'kvm', present: true }));
  r.register('query-uuid', () => ({ UUID: d.config.uuid }));
  const { machineInfoAcpi } = activeProfile().qmp;
  // compat-props (10.0, unstable): the properties each machine type sets for compatibility, as
  // the release itself lists them.
  r.register('query-machines', (a: { 'compat-props'?: boolean }) =>
    machines().map((m) => ({
      name: m.name,
      alias: m.alias,
      'is-default': m.isDefault,
      'cpu-max': m.cpuMax,
      'hotpluggable-cpus': m.hotpluggableCpus,
      'numa-mem-supported': m.numaMemSupported,
      deprecated: m.deprecated,
      'default-cpu-type': m.defaultCpuType,
      'default-ram-id': m.defaultRamId,
      ...(machineInfoAcpi ? { acpi: m.acpi } : {}),
      ...(a['compat-props'] ? { 'compat-props': qemuData.compatProps()[m.name] ?? [] } : {}),
    })),
  );
  // As QEMU lists them; the daemon's own thread stands for every vCPU's.
  r.register('query-cpus-fast', () =>
    Array.from({ length: d.config.cpus.cpus }, (_, i) => ({
      'cpu-index': i,
      'qom-path': cpuQomPath(i),
      'thread-id': process.pid,
      props: cpuProps(d.config.cpus, i),
      target: 'x86_64',
    })),
  );
  r.register('system_powerdown', () => {
    d.guest.power.pressPowerButton();
    return {};
  });
  r.register('system_reset', () => {
    d.guest.power.reset('host-qmp-system-reset');
    return {};
  });
}
