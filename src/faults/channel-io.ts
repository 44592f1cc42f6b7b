/**
 * The faults of a channel whose messages are few and small (the return path, the COLO compare
 * connection), applied message by message: a writer for the end that sends them, and a read
 * for the end that receives them. The main and multifd channels apply theirs to the bytes as
 * they go (channels/outgoing-channel.ts, channels/socket-input.ts).
 */
import net from 'node:net';
import type { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { StreamEnded } from '../migration/stream/reader.js';
import { faults, STALL_POLL_MS, type ChannelEnd } from './faults.js';

/** The sending end: messages go out in order, each through the faults on `end`. */
export class FaultableWriter {
  /** Messages held by a fault, in order; while any are, later ones queue behind them. */
  private held = 0;
  private turn = Promise.resolve();

  constructor(
    private readonly out: Writable,
    private readonly channel: ChannelEnd,
  ) {
    faults.channelOpened(channel, {
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
        while (faults.stalled(this.channel) > 0 && !this.out.destroyed) await sleep(STALL_POLL_MS);
        const { waitMs, cut } = faults.onChannel(this.channel, pieces);
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

/**
 * The receiving end: the faults on `end` for the bytes of a message just read. A stall or delay
 * holds it, a corrupt flips a byte of it, a close or reset breaks the connection, and the read
 * then fails as at the connection's end.
 */
export async function readThroughFaults(end: ChannelEnd, bytes: Buffer): Promise<Buffer> {
  let done = 0; // the bytes the faults have seen
  for (;;) {
    while (faults.stalled(end) > 0) await sleep(STALL_POLL_MS);
    const pieces = [bytes.subarray(done)];
    const { waitMs, cut } = faults.onChannel(end, pieces);
    if (waitMs > 0) await sleep(waitMs);
    if (!cut) return done ? Buffer.concat([bytes.subarray(0, done), pieces[0]!]) : pieces[0]!;
    cut.fire();
    if (cut.breaks) throw new StreamEnded();
    done += cut.bytes; // a fault that starts here holds the rest
  }
}
