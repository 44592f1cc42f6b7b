/**
 * Descriptor passing (QAPI module "misc"): getfd and closefd. A descriptor comes with a command
 * as SCM_RIGHTS ancillary data, which Node cannot read; so none ever arrives, and both commands
 * answer as QEMU answers without one.
 */
import type { Daemon } from '../daemon/context.js';
import { Errors } from '../errors.js';

export function registerFds(d: Daemon): void {
  d.registry.register('getfd', () => {
    throw Errors.noFdSupplied();
  });
  d.registry.register('closefd', (a: { fdname: string }) => {
    throw Errors.fdNameNotFound(a.fdname);
  });
}
