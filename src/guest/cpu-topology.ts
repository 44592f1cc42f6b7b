/**
 * The guest's vCPUs as QEMU lays them out for a PC (hw/core/machine-smp.c and the x86 CPU
 * topology): -smp's missing numbers filled in the way its machines do (cores before sockets),
 * QEMU's checks with its words, and each vCPU's socket/die/module/core/thread ids and QOM path,
 * as query-cpus-fast lists them. Which levels the x86 hierarchy has is the release's (modules
 * came with 9.x): the caller passes them.
 */
export interface CpuTopology {
  /** vCPUs present at start (indexes 0..cpus-1). */
  cpus: number;
  maxCpus: number;
  sockets: number;
  dies: number;
  /** 1 where the release has no module level. */
  modules: number;
  cores: number;
  threads: number;
}

export const NO_CPUS: CpuTopology = { cpus: 0, maxCpus: 0, sockets: 0, dies: 0, modules: 0, cores: 0, threads: 0 };

/** The levels of the x86 CPU hierarchy, outermost first. */
export type SmpLevel = 'sockets' | 'dies' | 'modules' | 'cores' | 'threads';

export class SmpError extends Error {}

/** -smp's keys as given (absent or 0: to be computed), the machine's limit, the release's levels. */
export function cpuTopology(
  given: Partial<Record<'cpus' | 'maxcpus' | SmpLevel, number>>,
  machine: { name: string; cpuMax: number },
  levels: readonly SmpLevel[],
): CpuTopology {
  let { cpus = 0, maxcpus = 0, sockets = 0, cores = 0, threads = 0 } = given;
  const dies = given.dies || 1;
  const modules = given.modules || 1;
  if (cpus === 0 && maxcpus === 0) {
    sockets ||= 1;
    cores ||= 1;
    threads ||= 1;
  } else {
    maxcpus ||= cpus;
    sockets ||= 1;
    // Integer division, as QEMU's: an uneven split is caught by the product check below.
    if (cores === 0) {
      threads ||= 1;
      cores = Math.floor(maxcpus / (sockets * dies * modules * threads));
    } else if (threads === 0) {
      threads = Math.floor(maxcpus / (sockets * dies * modules * cores));
    }
  }
  const product = sockets * dies * modules * cores * threads;
  maxcpus ||= product;
  cpus ||= maxcpus;
  const count: Record<SmpLevel, number> = { sockets, dies, modules, cores, threads };
  const hierarchy = levels.map((l) => `${l} (${count[l]})`).join(' * ');
  if (product !== maxcpus) throw new SmpError(`Invalid CPU topology: product of the hierarchy must match maxcpus: ${hierarchy} != maxcpus (${maxcpus})`);
  if (maxcpus < cpus) throw new SmpError(`Invalid CPU topology: maxcpus must be equal to or greater than smp: ${hierarchy} == maxcpus (${maxcpus}) < smp_cpus (${cpus})`);
  if (maxcpus > machine.cpuMax) throw new SmpError(`Invalid SMP CPUs ${maxcpus}. The max CPUs supported by machine '${machine.name}' is ${machine.cpuMax}`);
  return { cpus, maxCpus: maxcpus, sockets, dies, modules, cores, threads };
}

/**
 * The ids of vCPU `index` (x86_topo_ids_from_idx); die-id and module-id only where there is more
 * than one die or module.
 */
export function cpuProps(t: CpuTopology, index: number): Record<string, number> {
  const props: Record<string, number> = {
    'core-id': Math.floor(index / t.threads) % t.cores,
    'thread-id': index % t.threads,
  };
  const perModule = t.threads * t.cores;
  if (t.modules > 1) props['module-id'] = Math.floor(index / perModule) % t.modules;
  if (t.dies > 1) props['die-id'] = Math.floor(index / (perModule * t.modules)) % t.dies;
  props['socket-id'] = Math.floor(index / (perModule * t.modules * t.dies));
  return props;
}

/**
 * vCPU `index`'s QOM path: the first is the machine's first unattached device, the rest come
 * after one other device QEMU creates in between.
 */
export function cpuQomPath(index: number): string {
  return `/machine/unattached/device[${index === 0 ? 0 : index + 1}]`;
}
