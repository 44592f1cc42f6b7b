/**
 * QAPI module "misc": query-name, human-monitor-command, query-command-line-options (QEMU 7.2's
 * own answer, qemu-data.ts), and qmigd's diagnostic sleep.
 */
import type { Daemon } from '../daemon/context.js';
import { Errors } from '../errors.js';
import { runHmp } from './hmp.js';
import { qemuData } from './qemu-data.js';

export function registerMisc(d: Daemon): void {
  d.registry.register('query-name', () => (d.config.name !== undefined ? { name: d.config.name } : {}));
  d.registry.register('human-monitor-command', (args: { 'command-line': string; 'cpu-index'?: number }) => {
    // monitor_set_cpu(): the index of a vCPU the machine has (-M none has none). QEMU checks it
    // before it reads the command line; no HMP command qmigd has depends on the CPU.
    const cpu = args['cpu-index'];
    if (cpu !== undefined && !(cpu >= 0 && cpu < d.config.cpus.cpus)) throw Errors.parameterValue('cpu-index', 'a CPU number');
    return runHmp(d, args['command-line']);
  });
  d.registry.register('query-command-line-options', (args: { option?: string }) => {
    const all = qemuData.commandLineOptions();
    if (args.option === undefined) return all;
    const one = all.filter((o) => o.option === args.option);
    if (!one.length) throw Errors.invalidOptionName(args.option);
    return one;
  });
  d.registry.register(
    '__org.qmigd_sleep',
    (args: { milliseconds: number }) => new Promise((resolve) => setTimeout(() => resolve({}), args.milliseconds)),
  );
}
