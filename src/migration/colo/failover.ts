/**
 * FailoverStatus (migration/colo-failover.c): every move is a compare-and-swap, so a second
 * x-colo-lost-heartbeat, or a failover racing with a checkpoint load, finds the state taken.
 *
 *   none ──heartbeat──► require ──bh──► active ──► completed
 *                                         └─(secondary loading a checkpoint)─► relaunch ──► none ──► require
 */
export type FailoverStatus = 'none' | 'require' | 'active' | 'completed' | 'relaunch';

export class Failover {
  status: FailoverStatus = 'none';

  /** failover_set_state(): moves `from` → `to` if still `from`; returns the state found. */
  change(from: FailoverStatus, to: FailoverStatus): FailoverStatus {
    const old = this.status;
    if (old === from) this.status = to;
    return old;
  }

  reset(): void {
    this.status = 'none';
  }
}
