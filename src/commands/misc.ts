/** QAPI module "misc": query-name, human-monitor-command, and qmigd's diagnostic sleep. */
import type { Daemon } from '../daemon/context.js';
import { Errors } from '../errors.js';
import { runHmp } from './hmp.js';

export function registerMisc(d: Daemon): void {
  d.registry.register('query-name', () => (d.config.name !== undefined ? { name: d.config.name } : {}));
  d.registry.register('human-monitor-command', (args: { 'command-line': string; 'cpu-index'?: number }) => {
    // monitor_set_cpu() finds no CPU of any index: qmigd emulates none, as -M none has none.
    // QEMU checks it before it reads the command line.
    if (args['cpu-index'] !== undefined) throw Errors.parameterValue('cpu-index', 'a CPU number');
    return runHmp(d, args['command-line']);
  });
  d.registry.register(
    '__org.qmigd_sleep',
    (args: { milliseconds: number }) => new Promise((resolve) => setTimeout(() => resolve({}), args.milliseconds)),
  );
}
