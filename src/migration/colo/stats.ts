/** Per-side COLO statistics (__org.qmigd_query-colo-stats). */
export class ColoStats {
  checkpoints = 0;
  pauseLastMs = 0;
  pauseMaxMs = 0;
  private pauseTotalMs = 0;
  bytesLast = 0;
  bytesTotal = 0;
  /** colo-compare's verdicts that asked for a checkpoint (primary only). */
  miscompares = 0;
  /** SHA-256 of RAM at the last completed checkpoint, when --colo-checkpoint-digest is on. */
  lastDigest?: string;

  record(pauseMs: number, bytes: number): void {
    this.checkpoints++;
    this.pauseLastMs = pauseMs;
    this.pauseMaxMs = Math.max(this.pauseMaxMs, pauseMs);
    this.pauseTotalMs += pauseMs;
    this.bytesLast = bytes;
    this.bytesTotal += bytes;
  }

  toJSON(): Record<string, number | string> {
    const n = this.checkpoints;
    return {
      checkpoints: n,
      'pause-last-us': us(this.pauseLastMs),
      'pause-mean-us': us(n ? this.pauseTotalMs / n : 0),
      'pause-max-us': us(this.pauseMaxMs),
      'bytes-last': this.bytesLast,
      'bytes-mean': n ? Math.round(this.bytesTotal / n) : 0,
      'bytes-total': this.bytesTotal,
      miscompares: this.miscompares,
      ...(this.lastDigest ? { 'last-checkpoint-sha256': this.lastDigest } : {}),
    };
  }
}

/** Whole microseconds: readable in QMP's number format, where fractions print as %.17g. */
const us = (ms: number): number => Math.round(ms * 1000);
