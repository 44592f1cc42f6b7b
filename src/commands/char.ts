/**
 * QAPI module "char": query-chardev lists the character devices that carry the QMP monitors,
 * named and described as QEMU names them (`-qmp` gives compat_monitorN; `-chardev id=X` gives X),
 * newest first, as QEMU lists them.
 */
import type { Daemon } from '../daemon/context.js';

export function registerChar(d: Daemon): void {
  d.registry.register('query-chardev', () =>
    [...d.chardevs].reverse().map((c) => ({ label: c.label, filename: c.filename, 'frontend-open': true })),
  );
}
