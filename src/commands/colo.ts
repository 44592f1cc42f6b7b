/**
 * COLO's commands (qapi/migration.json in 7.2): x-colo-lost-heartbeat, query-colo-status, the
 * Xen replication commands, and qmigd's statistics and fault injection. Without block replication
 * drivers the Xen commands act on an empty set of replication nodes: they succeed, as 7.2 does
 * with none configured, and only check their arguments.
 */
import type { Daemon } from '../daemon/context.js';
import { Errors } from '../errors.js';
import type { CrashPoint } from '../migration/colo/primary.js';

export function registerColo(d: Daemon): void {
  const m = d.migration;
  d.registry.register('x-colo-lost-heartbeat', () => {
    m.lostHeartbeat();
    return {};
  });
  d.registry.register('query-colo-status', () => m.coloStatus());
  d.registry.register('xen-set-replication', (a: { enable: boolean; primary: boolean; failover?: boolean }) => {
    if (a.enable && a.failover !== undefined) throw Errors.replicationFailoverOnlyForStop();
    return {};
  });
  d.registry.register('query-xen-replication-status', () => ({ error: false }));
  d.registry.register('xen-colo-do-checkpoint', () => ({}));
  d.registry.register('__org.qmigd_query-colo-stats', () => m.coloStats.toJSON());
  d.registry.register('__org.qmigd_colo-crash-at', (a: { point: CrashPoint | 'none' }) => {
    m.crashAt = a.point === 'none' ? undefined : a.point;
    return {};
  });
}
