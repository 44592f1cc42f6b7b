/**
 * Takes monitors' work one piece at a time (a request, or a slice of input), round-robin across
 * monitors, as QEMU's monitor_qmp_dispatcher_co takes requests, and lets the event loop run
 * whenever a turn has used its time. A client that pipelines two thousand requests, or streams
 * a 64 MiB message, then gets one piece in each round like every other client, and the
 * migration, the other connections' I/O and the timers run between turns.
 */

/** A monitor with work for a scheduler. */
export interface Schedulable {
  /** Whether it has a request for this scheduler now. */
  hasWork(): boolean;
  /** Serves one request, reply included. */
  serveOne(): Promise<void>;
}

/** Lets the event loop run: I/O, timers and other monitors go before whatever follows. */
export const yieldTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class RoundRobin<T extends Schedulable> {
  private readonly turns: T[] = [];
  private readonly waiting = new Set<T>();
  private running = false;

  /**
   * `onError` hears of a piece of work that failed (the other monitors' turns go on); a turn
   * ends once it has run `turnMs`.
   */
  constructor(
    private readonly onError: (err: unknown) => void,
    private readonly turnMs = 2,
  ) {}

  /** `monitor` has work: it gets a turn after every monitor already waiting. */
  notify(monitor: T): void {
    if (this.waiting.has(monitor)) return;
    this.waiting.add(monitor);
    this.turns.push(monitor);
    if (!this.running) void this.loop();
  }

  private async loop(): Promise<void> {
    this.running = true;
    try {
      let turnStart = performance.now();
      while (this.turns.length > 0) {
        const monitor = this.turns.shift()!;
        this.waiting.delete(monitor);
        if (!monitor.hasWork()) continue;
        await monitor.serveOne().catch(this.onError);
        if (monitor.hasWork()) this.notify(monitor);
        if (performance.now() - turnStart >= this.turnMs) {
          await yieldTurn();
          turnStart = performance.now();
        }
      }
    } finally {
      this.running = false;
    }
  }
}
