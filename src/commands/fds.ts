/**
 * Descriptor passing (QAPI module "misc"), as QEMU 7.2's monitor/misc.c and monitor/fds.c:
 * getfd and closefd name the descriptors a client passed with SCM_RIGHTS over a unix monitor;
 * add-fd, remove-fd and query-fdsets keep them in global fdsets. Which descriptor a command
 * takes, and when the others are closed, is src/qmp/descriptors.ts; fdsets are fdsets.ts.
 * migrate and migrate-incoming take named descriptors through the current monitor (fd:NAME).
 */
import type { Daemon } from '../daemon/context.js';
import { Errors } from '../errors.js';
import { closeFd, currentMonitorFds } from '../qmp/descriptors.js';
import { FdSets, MAX_FDSET_FDS } from './fdsets.js';

export function registerFds(d: Daemon): void {
  const fdsets = new FdSets();
  const state = () => ({ running: d.guest.runState.running, monitors: d.qmp.clientCount });

  d.registry.register('getfd', (a: { fdname: string }, ctx) => {
    const fd = ctx.fds.takeReceived();
    if (fd === undefined) throw Errors.noFdSupplied();
    if (/^[0-9]/.test(a.fdname)) {
      closeFd(fd);
      throw Errors.parameterValue('fdname', 'a name not starting with a digit');
    }
    if (!ctx.fds.named.set(a.fdname, fd)) {
      closeFd(fd);
      ctx.log.warn({ fdname: a.fdname, limit: ctx.fds.named.limit }, 'getfd refused: the monitor holds as many named descriptors as qmigd keeps');
      throw Errors.monitorFdLimit(ctx.fds.named.limit);
    }
    return {};
  });

  d.registry.register('closefd', (a: { fdname: string }, ctx) => {
    if (!ctx.fds.named.close(a.fdname)) throw Errors.fdNameNotFound(a.fdname);
    return {};
  });

  d.registry.register('add-fd', (a: { 'fdset-id'?: number | bigint; opaque?: string }, ctx) => {
    const fd = ctx.fds.takeReceived();
    if (fd === undefined) throw Errors.noFdSupplied();
    const info = fdsets.add(fd, a['fdset-id'], a.opaque);
    if (typeof info === 'object') return info;
    closeFd(fd);
    if (info === 'negative-id') throw Errors.parameterValue('fdset-id', 'a non-negative value');
    ctx.log.warn({ limit: MAX_FDSET_FDS }, 'add-fd refused: the fdsets hold as many descriptors as qmigd keeps');
    throw Errors.fdsetFdLimit(MAX_FDSET_FDS);
  });

  d.registry.register('remove-fd', (a: { 'fdset-id': number | bigint; fd?: number | bigint }) => {
    if (!fdsets.remove(a['fdset-id'], a.fd, state())) {
      throw Errors.fdNameNotFound(a.fd === undefined ? `fdset-id:${a['fdset-id']}` : `fdset-id:${a['fdset-id']}, fd:${a.fd}`);
    }
    return {};
  });

  d.registry.register('query-fdsets', () => fdsets.query());

  // After a client disconnect, as QEMU's monitor_fdsets_cleanup().
  d.registry.onMonitorClosed(() => fdsets.cleanupAll(state()));

  // migrate and migrate-incoming find named descriptors on the monitor that runs them.
  d.migration.monitorFds = () => currentMonitorFds()?.named;
}
