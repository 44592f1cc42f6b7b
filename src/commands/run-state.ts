/** QAPI module "run-state": query-status, stop, cont. */
import type { Daemon } from '../daemon/context.js';
import { Errors } from '../errors.js';

export function registerRunState(d: Daemon): void {
  d.registry.register('query-status', () => ({
    running: d.runState.running,
    singlestep: false,
    status: d.runState.state,
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
  if (d.runState.state === 'inmigrate') d.config.paused = true;
  else d.runState.stop('paused');
}

/** qmp_cont() */
export function contGuest(d: Daemon): void {
  if (d.runState.needsReset) throw Errors.resetRequired();
  if (d.runState.state === 'suspended') return;
  if (d.runState.state === 'finish-migrate') throw Errors.migrationNotFinalized();
  if (d.runState.state === 'inmigrate') d.config.paused = false;
  else d.runState.start();
}
