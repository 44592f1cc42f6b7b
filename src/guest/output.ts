/**
 * The guest's network output, as colo-compare sees it: while the guest runs it sends a packet
 * every PERIOD_MS. A packet's payload is a function of the epoch (completed COLO checkpoints) and
 * its sequence number in that epoch, so two replicas in step send the same packets; `diverge`
 * makes this guest's payloads differ, as a replica that went its own way would.
 */
export interface OutputPacket {
  epoch: number;
  seq: number;
  payload: number;
}

const PERIOD_MS = 20;

export class GuestOutput {
  diverge = false;
  private epoch = 0;
  private seq = 0;
  private readonly listeners = new Set<(p: OutputPacket) => void>();
  /** Ticks only while someone listens (COLO's compare): an idle daemon does not wake up. */
  private timer?: NodeJS.Timeout;

  constructor(private readonly running: () => boolean) {}

  /** A checkpoint: both replicas start the next epoch from the same state. */
  startEpoch(epoch: number): void {
    this.epoch = epoch;
    this.seq = 0;
  }

  onPacket(listener: (p: OutputPacket) => void): () => void {
    this.listeners.add(listener);
    if (!this.timer) {
      this.timer = setInterval(() => this.emit(), PERIOD_MS);
      this.timer.unref();
    }
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size > 0 || !this.timer) return;
      clearInterval(this.timer);
      this.timer = undefined;
    };
  }


  private emit(): void {
    if (!this.running() || this.listeners.size === 0) return;
    const seq = this.seq++;
    const packet = { epoch: this.epoch, seq, payload: (mix(this.epoch * 65536 + seq) ^ (this.diverge ? 1 : 0)) >>> 0 };
    for (const l of this.listeners) l(packet);
  }
}

function mix(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x45d9f3b);
  x = Math.imul(x ^ (x >>> 16), 0x45d9f3b);
  return (x ^ (x >>> 16)) >>> 0;
}
