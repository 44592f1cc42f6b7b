/**
 * The guest's vCPUs as QEMU 7.2 lays them out for a PC (hw/core/machine-smp.c and the x86 CPU
 * topology): -smp's missing numbers filled in the way 7.2 machines do (cores before sockets),
 * QEMU's checks with its words, and each vCPU's socket/die/core/thread ids and QOM path, as
 * query-cpus-fast lists them.
 */
export interface CpuTopology {
  /** vCPUs present at start (indexes 0..cpus-1). */
  cpus: number;
  maxCpus: number;
  sockets: number;
  dies: number;
  cores: number;
  threads: number;
}

export const NO_CPUS: CpuTopology = { cpus: 0, maxCpus: 0, sockets: 0, dies: 0, cores: 0, threads: 0 };

export class SmpError extends Error {}

/** -smp's keys as given (absent or 0: to be computed), and the machine's limit. */
export function cpuTopology(given: Partial<Record<'cpus' | 'maxcpus' | 'sockets' | 'dies' | 'cores' | 'threads', number>>, machine: { name: string; cpuMax: number }): CpuTopology {
  let { cpus = 0, maxcpus = 0, sockets = 0, cores = 0, threads = 0 } = given;
  const dies = given.dies || 1;
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
      cores = Math.floor(maxcpus / (sockets * dies * threads));
    } else if (threads === 0) {
      threads = Math.floor(maxcpus / (sockets * dies * cores));
    }
  }
  const product = sockets * dies * cores * threads;
  maxcpus ||= product;
  cpus ||= maxcpus;
  const hierarchy = `sockets (${sockets}) * dies (${dies}) * cores (${cores}) * threads (${threads})`;
  if (product !== maxcpus) throw new SmpError(`Invalid CPU topology: product of the hierarchy must match maxcpus: ${hierarchy} != maxcpus (${maxcpus})`);
  if (maxcpus < cpus) throw new SmpError(`Invalid CPU topology: maxcpus must be equal to or greater than smp: ${hierarchy} == maxcpus (${maxcpus}) < smp_cpus (${cpus})`);
  if (maxcpus > machine.cpuMax) throw new SmpError(`Invalid SMP CPUs ${maxcpus}. The max CPUs supported by machine '${machine.name}' is ${machine.cpuMax}`);
  return { cpus, maxCpus: maxcpus, sockets, dies, cores, threads };
}

/** The ids of vCPU `index` (x86_topo_ids_from_idx); die-id only where there is more than one die. */
export function cpuProps(t: CpuTopology, index: number): Record<string, number> {
  const props: Record<string, number> = {
    'core-id': Math.floor(index / t.threads) % t.cores,
    'thread-id': index % t.threads,
  };
  if (t.dies > 1) props['die-id'] = Math.floor(index / (t.threads * t.cores)) % t.dies;
  props['socket-id'] = Math.floor(index / (t.threads * t.cores * t.dies));
  return props;
}

/**
 * vCPU `index`'s QOM path: the first is the machine's first unattached device, the rest come
 * after one other device QEMU creates in between.
 */
export function cpuQomPath(index: number): string {
  return `/machine/unattached/device[${index === 0 ? 0 : index + 1}]`;
}
