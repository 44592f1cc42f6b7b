/** QAPI module "yank": drop a chardev's or a migration's connections at once (OOB-capable). */
import type { Daemon, YankInstance } from '../daemon/context.js';
import { Errors } from '../errors.js';

export function registerYank(d: Daemon): void {
  d.registry.register('yank', (args: { instances: YankInstance[] }) => {
    if (!d.yank.yank(args.instances)) throw Errors.yankInstanceNotFound();
    return {};
  });
  d.registry.register('query-yank', () => d.yank.list() as unknown as { [k: string]: string }[]);
}
