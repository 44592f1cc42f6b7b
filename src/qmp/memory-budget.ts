/**
 * A bound on what all QMP connections together may hold: input read but not yet served (a
 * message being streamed, queued requests, bytes waiting to be fed) and output not yet taken by
 * the client. QEMU's limits are per message (64 MiB of token text); without a total, a few dozen
 * clients each sending a large message, before negotiation even, could exhaust the daemon's
 * heap. Past the limit the connection holding the most is dropped, with a log line: the one
 * that pays is the one that asked for the most.
 */
import type { Logger } from 'pino';

export interface BudgetHolder {
  /** Bytes held for this connection now. */
  readonly held: number;
  /** A name for the log. */
  readonly description: string;
  /** Closes the connection at once, dropping what it holds. */
  drop(): void;
}

/** The default total: four of QEMU's largest messages. */
export const DEFAULT_QMP_MEMORY_BUDGET = 256 * 1024 * 1024;

export class MemoryBudget {
  /** Each holder's bytes as last reported. */
  private readonly reported = new Map<BudgetHolder, number>();
  private total = 0;

  constructor(
    readonly limit: number,
    private readonly log: Logger,
  ) {}

  add(holder: BudgetHolder): void {
    this.reported.set(holder, 0);
  }

  remove(holder: BudgetHolder): void {
    this.total -= this.reported.get(holder) ?? 0;
    this.reported.delete(holder);
  }

  /** `holder`'s bytes changed; past the limit, the greediest connections are dropped. */
  update(holder: BudgetHolder): void {
    const before = this.reported.get(holder);
    if (before === undefined) return;
    const now = holder.held;
    this.reported.set(holder, now);
    this.total += now - before;
    if (this.total > this.limit) this.enforce();
  }

  /** What all connections hold, as last reported. */
  get used(): number {
    return this.total;
  }

  private enforce(): void {
    // Output drains without telling anyone, so the running total may be stale: count afresh.
    this.total = 0;
    for (const h of this.reported.keys()) {
      const held = h.held;
      this.reported.set(h, held);
      this.total += held;
    }
    while (this.total > this.limit && this.reported.size > 0) {
      let greediest: BudgetHolder | undefined;
      let most = -1;
      for (const [h, held] of this.reported) {
        if (held > most) {
          greediest = h;
          most = held;
        }
      }
      this.log.warn(
        { client: greediest!.description, held: most, total: this.total, limit: this.limit },
        'QMP connections hold more than their memory budget; dropping the one that holds the most',
      );
      this.remove(greediest!);
      greediest!.drop();
    }
  }
}
