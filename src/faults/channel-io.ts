/**
 * Bytes through the faults of their channel end: throughFaults(), the one loop that waits out
 * stalls and delays and acts at a fault's byte, used by every channel that sends (OutgoingChannel)
 * and by the channels whose messages are few and small (the return path, the COLO compare
 * connection): a writer for the end that sends them, and a read for the end that receives them.
 * A socket's receiving side applies its faults as reads arrive (channels/socket-input.ts).
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
      const send = (pieces: Buffer[]): void => void this.out.write(Buffer.concat(pieces));
      const rest = await throughFaults(this.channel, [message], send, () => !this.out.destroyed);
      if (rest?.length) send(rest);
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
  const seen: Buffer[] = []; // before a fault that starts within the message: it has come in already
  const rest = await throughFaults(end, [bytes], (before) => void seen.push(...before));
  if (!rest) throw new StreamEnded();
  return seen.length ? Buffer.concat([...seen, ...rest]) : rest[0]!;
}

/**
 * `pieces` through the faults on `end`: stalls are waited out (while `alive`), delays slept, and
 * where a fault acts within them `pass` gets the bytes before its byte, whole, before it acts. A
 * close, reset or crash breaks the channel there; after any other fault (a stall, say) the rest
 * is offered again, and the fault, now in force, holds it. Returns what is still to go, or
 * undefined once the channel is broken.
 */
export async function throughFaults(
  end: ChannelEnd,
  pieces: Buffer[],
  pass: (before: Buffer[]) => void | Promise<void>,
  alive: () => boolean = () => true,
): Promise<Buffer[] | undefined> {
  for (;;) {
    while (faults.stalled(end) > 0 && alive()) await sleep(STALL_POLL_MS);
    const { waitMs, cut } = faults.onChannel(end, pieces);
    if (waitMs > 0) await sleep(waitMs);
    if (!cut) return alive() ? pieces : undefined;
    const [before, after] = split(pieces, cut.bytes);
    if (before.length) await pass(before);
    cut.fire();
    if (cut.breaks) return undefined;
    pieces = after;
  }
}

/** The pieces cut at `bytes`: what comes before, and the rest (views, no copy). */
function split(pieces: Buffer[], bytes: number): [Buffer[], Buffer[]] {
  const before: Buffer[] = [];
  const after: Buffer[] = [];
  for (const p of pieces) {
    if (bytes >= p.length) before.push(p);
    else if (bytes <= 0) after.push(p);
    else {
      before.push(p.subarray(0, bytes));
      after.push(p.subarray(bytes));
    }
    bytes -= p.length;
  }
  return [before, after];
}
