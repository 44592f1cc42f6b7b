/** QAPI module "migration": migrate, migrate-incoming, cancel, continue, capabilities, parameters, query-migrate, and the pre-6.0 commands. */
import type { Daemon } from '../daemon/context.js';
import { Errors } from '../errors.js';
import type { MigrationTarget } from '../migration/migration.js';
import type { Capability } from '../migration/params.js';
import type { MigrationStatus } from '../migration/state.js';
import type { JsonValue } from '../qmp/json-writer.js';

export function registerMigration(d: Daemon): void {
  const m = d.migration;
  const r = d.registry;
  // uri alone (7.2), or uri or channels (8.2 on): the profile's schema says which.
  r.register('migrate', (a: MigrationTarget & { blk?: boolean; inc?: boolean; detach?: boolean; resume?: boolean }) => {
    m.migrate(a, a);
    return {};
  });
  r.register('migrate-incoming', async (a: MigrationTarget) => {
    await m.startIncoming(a);
    return {};
  });
  r.register('migrate_cancel', () => {
    m.cancel();
    return {};
  });
  r.register('migrate-continue', (a: { state: MigrationStatus }) => {
    m.continue(a.state);
    return {};
  });
  r.register('query-migrate', () => m.info() as JsonValue);
  r.register('migrate-set-capabilities', (a: { capabilities: Array<{ capability: Capability; state: boolean }> }) => {
    m.setCapabilities(a.capabilities);
    return {};
  });
  r.register('query-migrate-capabilities', () => m.queryCapabilities());
  r.register('migrate-set-parameters', (a: Record<string, unknown>) => {
    m.setParameters(a);
    return {};
  });
  r.register('query-migrate-parameters', () => m.queryParameters() as JsonValue);

  r.register('migrate-start-postcopy', () => {
    m.startPostcopy();
    return {};
  });
  r.register('migrate-recover', async (a: { uri: string }) => {
    await m.recover(a.uri);
    return {};
  });
  r.register('migrate-pause', () => {
    m.pause();
    return {};
  });

  // Removed from QEMU in 6.0; kept with their 5.2 semantics (thin wrappers over the parameters)
  // where the profile's schema still has them (7.2's: qmigd's extension for old clients).
  r.registerIfInSchema('migrate_set_speed', (a: { value: number }) => {
    m.setParameters({ 'max-bandwidth': a.value });
    return {};
  });
  r.registerIfInSchema('migrate_set_downtime', (a: { value: number }) => {
    if (!(a.value >= 0 && a.value <= 2000)) throw Errors.legacyDowntimeRange();
    m.setParameters({ 'downtime-limit': Math.trunc(a.value * 1000) });
    return {};
  });
  r.registerIfInSchema('migrate-set-cache-size', (a: { value: number }) => {
    m.setParameters({ 'xbzrle-cache-size': a.value });
    return {};
  });
  r.registerIfInSchema('query-migrate-cache-size', () => BigInt.asIntN(64, m.parameters['xbzrle-cache-size']));
}
