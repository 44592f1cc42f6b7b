/** QAPI module "misc": query-name, human-monitor-command, and qmigd's diagnostic sleep. */
import type { Daemon } from '../daemon/context.js';
import { runHmp } from './hmp.js';

export function registerMisc(d: Daemon): void {
  d.registry.register('query-name', () => (d.config.name !== undefined ? { name: d.config.name } : {}));
  d.registry.register('human-monitor-command', (args: { 'command-line': string }) => runHmp(d, args['command-line']));
  d.registry.register(
    '__org.qmigd_sleep',
    (args: { milliseconds: number }) => new Promise((resolve) => setTimeout(() => resolve({}), args.milliseconds)),
  );
}
