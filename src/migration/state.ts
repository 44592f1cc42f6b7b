/**
 * MigrationStatus as QEMU 7.2 has it (qapi/migration.json), its predicates (migration.c) and
 * migrate_set_state(): a compare-and-swap that announces every successful change, so a
 * transition that lost a race (cancel against completion) is simply not taken.
 */
import { faults } from '../faults/faults.js';

export type MigrationStatus =
  | 'none' | 'setup' | 'cancelling' | 'cancelled' | 'active' | 'postcopy-active' | 'postcopy-paused'
  | 'postcopy-recover' | 'completed' | 'failed' | 'colo' | 'pre-switchover' | 'device' | 'wait-unplug'
  /** 9.0+: a paused postcopy's source between `migrate resume` and its connection. */
  | 'postcopy-recover-setup';

const RUNNING: ReadonlySet<MigrationStatus> = new Set([
  'setup', 'active', 'postcopy-active', 'postcopy-paused', 'postcopy-recover-setup', 'postcopy-recover', 'pre-switchover', 'device',
  'wait-unplug', 'cancelling',
]);

/** migration_is_running() */
export const isMigrationRunning = (s: MigrationStatus): boolean => RUNNING.has(s);

const IN_POSTCOPY: ReadonlySet<MigrationStatus> = new Set(['postcopy-active', 'postcopy-paused', 'postcopy-recover-setup', 'postcopy-recover']);

/** migration_in_postcopy() */
export const isInPostcopy = (s: MigrationStatus): boolean => IN_POSTCOPY.has(s);

export class MigrationStateCell {
  status: MigrationStatus = 'none';

  constructor(private readonly announce: (status: MigrationStatus) => void) {}

  /** migrate_set_state(): moves `from` → `to` only if the state is still `from`. */
  change(from: MigrationStatus, to: MigrationStatus): boolean {
    if (this.status !== from) return false;
    this.status = to;
    this.announce(to);
    faults.reached(to);
    return true;
  }

  /** A silent reset, as migrate_init() puts the state back to none before announcing setup. */
  reset(): void {
    this.status = 'none';
  }
}
