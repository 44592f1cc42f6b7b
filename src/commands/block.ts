/** QAPI module "block-core": qmigd emulates no block device, so each query lists none. */
import type { Daemon } from '../daemon/context.js';

export function registerBlock(d: Daemon): void {
  d.registry.register('query-block', () => []);
  d.registry.register('query-named-block-nodes', () => []);
  d.registry.register('query-blockstats', () => []);
}
