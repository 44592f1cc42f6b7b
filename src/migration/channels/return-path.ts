/**
 * The destination's end of the return path: its messages go out in order, through the faults
 * placed on it (src/faults, channel return-path, side send). QEMU runs the return path over the
 * main channel's connection, so a close or reset of it breaks that one connection.
 */
import net from 'node:net';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { faults, STALL_POLL_MS, type ChannelEnd } from '../../faults/faults.js';

const END: ChannelEnd = { channel: 'return-path', side: 'send' };

export class ReturnPathWriter {
  /** Messages held by a fault, in order; while any are, later ones queue behind them. */
  private held = 0;
  private turn = Promise.resolve();

  constructor(private readonly out: Writable) {
    faults.channelOpened(END, {
      close: () => out.destroy(),
      reset: () => (out instanceof net.Socket ? out.resetAndDestroy() : out.destroy()),
    });
  }

  /** A message (header and payload); without faults it is written at once, as before. */
  write(message: Buffer): void {
    if (!faults.any && this.held === 0) return void this.out.write(message);
    this.later(async () => {
      let pieces = [message];
      for (;;) {
        while (faults.stalled(END) > 0 && !this.out.destroyed) await sleep(STALL_POLL_MS);
        const { waitMs, cut } = faults.onChannel(END, pieces);
        if (waitMs > 0) await sleep(waitMs);
        if (!cut) return void this.out.write(pieces[0]!);
        if (cut.bytes > 0) this.out.write(pieces[0]!.subarray(0, cut.bytes));
        cut.fire();
        if (cut.breaks) return;
        pieces = [pieces[0]!.subarray(cut.bytes)]; // held now by the fault that starts here
      }
    });
  }

  /** Ends the way back once every message before has gone. */
  end(): void {
    if (this.held === 0) return void this.out.end();
    this.later(async () => void this.out.end());
  }

  private later(step: () => Promise<void>): void {
    this.held++;
    this.turn = this.turn
      .then(step)
      .catch(() => undefined) // a write to a broken connection: the load reports that
      .finally(() => this.held--);
  }
}
