/** QAPI module "run-state": query-status, stop, cont. */
import type { Daemon } from '../daemon/context.js';
import { Errors } from '../errors.js';
import { activeProfile } from '../profiles/index.js';

export function registerRunState(d: Daemon): void {
  const { statusSinglestep } = activeProfile().qmp;
  d.registry.register('query-status', () => ({
    running: d.guest.runState.running,
    ...(statusSinglestep ? { singlestep: false } : {}),
    status: d.guest.runState.state,
  }));
  d.registry.register('stop', () => {
    stopGuest(d);
    return {};
  });
  d.registry.register('cont', () => {
    contGuest(d);
    return {};
  });
}

/** qmp_stop() */
export function stopGuest(d: Daemon): void {
  // On an incoming side QEMU only forgets autostart; the guest starts stopped.
  if (d.guest.runState.state === 'inmigrate') d.guest.autostart = false;
  else d.guest.runState.stop('paused');
}

/** qmp_cont() */
export function contGuest(d: Daemon): void {
  if (d.guest.runState.needsReset) throw Errors.resetRequired();
  if (d.guest.runState.state === 'suspended') return;
  if (d.guest.runState.state === 'finish-migrate') throw Errors.migrationNotFinalized();
  if (d.guest.runState.state === 'inmigrate') d.guest.autostart = true;
  else d.guest.runState.start();
}
