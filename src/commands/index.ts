/** Every QMP command qmigd serves, by QAPI module. */
import type { Daemon } from '../daemon/context.js';
import { registerBlock } from './block.js';
import { registerChar } from './char.js';
import { registerColo } from './colo.js';
import { registerControl } from './control.js';
import { registerFaults } from './faults.js';
import { registerFds } from './fds.js';
import { registerGuest } from './guest.js';
import { registerMachine } from './machine.js';
import { registerQom } from './qom.js';
import { registerMigration } from './migration.js';
import { registerMisc } from './misc.js';
import { registerRunState } from './run-state.js';
import { registerYank } from './yank.js';

export function registerCommands(d: Daemon): void {
  registerControl(d);
  registerRunState(d);
  registerMisc(d);
  registerFds(d);
  registerYank(d);
  registerMigration(d);
  registerGuest(d);
  registerColo(d);
  registerMachine(d);
  registerQom(d);
  registerBlock(d);
  registerChar(d);
  registerFaults(d);
  d.registry.assertComplete();
}
