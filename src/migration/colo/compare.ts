/**
 * colo-compare, emulated (net/colo-compare.c): the primary holds its guest's packets and the
 * secondary's, pairs them by (epoch, sequence), and asks for a checkpoint when a pair differs or
 * when a packet waits unmatched longer than the compare timeout (colo_old_packet_check). A
 * checkpoint releases everything held.
 */
import type { OutputPacket } from '../../guest/output.js';

/** colo-compare's default compare_timeout. */
const COMPARE_TIMEOUT_MS = 3000;

interface Held {
  payload: number;
  at: number;
}

export class ColoCompare {
  /** Packets of epochs before this one belong to checkpoints already taken: dropped. */
  private epoch = 0;
  private readonly primary = new Map<string, Held>();
  private readonly secondary = new Map<string, Held>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly checkpoint: () => void) {
    this.timer = setInterval(() => this.expire(), COMPARE_TIMEOUT_MS / 3);
    this.timer.unref();
  }

  fromPrimary(p: OutputPacket): void {
    this.arrive(p, this.primary, this.secondary);
  }

  fromSecondary(p: OutputPacket): void {
    this.arrive(p, this.secondary, this.primary);
  }

  /** COLO_EVENT_CHECKPOINT: what was held is released; the next epoch begins. */
  released(nextEpoch: number): void {
    this.epoch = nextEpoch;
    this.primary.clear();
    this.secondary.clear();
  }

  stop(): void {
    clearInterval(this.timer);
    this.primary.clear();
    this.secondary.clear();
  }

  private arrive(p: OutputPacket, mine: Map<string, Held>, theirs: Map<string, Held>): void {
    if (p.epoch < this.epoch) return;
    const key = `${p.epoch}:${p.seq}`;
    const other = theirs.get(key);
    if (!other) {
      mine.set(key, { payload: p.payload, at: Date.now() });
      return;
    }
    theirs.delete(key);
    if (other.payload !== p.payload) this.mismatch();
  }

  private expire(): void {
    const old = Date.now() - COMPARE_TIMEOUT_MS;
    for (const held of [this.primary, this.secondary]) {
      for (const [key, h] of held) {
        if (h.at >= old) continue;
        held.delete(key);
        this.mismatch();
      }
    }
  }

  private mismatch(): void {
    this.checkpoint();
  }
}
