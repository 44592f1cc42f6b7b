/**
 * What the threads posting to the multifd channels share with the channel threads, per channel,
 * in shared memory: the next message's place in the channel's order, the bytes handed over and
 * not yet on the socket (and of those, the ones no counter has seen yet), and whether the
 * channel failed.
 *
 * Two threads post packets: the migration's, and the page thread during its slices (never both
 * at once). They post on two ports, which Node does not order between them, so each message
 * carries its place (`seq`) and the channel thread takes them in that order. The bytes in flight
 * are charged by whoever posts and paid back by the channel thread, so either poster can wait
 * for room without a message from the channel.
 */

/** Bytes a channel may have queued before a poster waits for it. */
export const IN_FLIGHT_LIMIT = 8 << 20;

const SEQ = 0;
const IN_FLIGHT = 1;
const FAILED = 2;
const UNCOUNTED = 3;
const FIELDS = 4;

export class ChannelState {
  private readonly at: number;

  constructor(
    private readonly words: Int32Array,
    id: number,
  ) {
    this.at = id * FIELDS;
  }

  /** The shared memory for `count` channels. */
  static memory(count: number): SharedArrayBuffer {
    return new SharedArrayBuffer(count * FIELDS * Int32Array.BYTES_PER_ELEMENT);
  }

  /** Channel `id`'s state in `memory`. */
  static of(memory: SharedArrayBuffer, id: number): ChannelState {
    return new ChannelState(new Int32Array(memory), id);
  }

  /** The place of the next message to the channel. */
  nextSeq(): number {
    return Atomics.add(this.words, this.at + SEQ, 1);
  }

  /** A packet of `bytes` handed over; `uncounted`: its channel counts it once sent (9.0+), nothing did yet. */
  charge(bytes: number, uncounted: boolean): void {
    Atomics.add(this.words, this.at + IN_FLIGHT, bytes);
    if (uncounted) Atomics.add(this.words, this.at + UNCOUNTED, bytes);
  }

  /** The channel thread: `bytes` left its buffers; a poster waiting for room looks again. */
  discharge(bytes: number, uncounted: boolean): void {
    if (uncounted) Atomics.sub(this.words, this.at + UNCOUNTED, bytes);
    Atomics.sub(this.words, this.at + IN_FLIGHT, bytes);
    Atomics.notify(this.words, this.at + IN_FLIGHT);
  }

  /** Bytes handed over that no counter has seen yet: the rate limit counts them meanwhile. */
  get uncounted(): number {
    return Atomics.load(this.words, this.at + UNCOUNTED);
  }

  get failed(): boolean {
    return Atomics.load(this.words, this.at + FAILED) !== 0;
  }

  /** The channel is unusable from now on; a poster waiting for room goes on. */
  fail(): void {
    Atomics.store(this.words, this.at + FAILED, 1);
    Atomics.notify(this.words, this.at + IN_FLIGHT);
  }

  /** Resolves once the channel has room (or failed). */
  async room(): Promise<void> {
    for (;;) {
      const inFlight = Atomics.load(this.words, this.at + IN_FLIGHT);
      if (this.failed || inFlight <= IN_FLIGHT_LIMIT) return;
      const wait = Atomics.waitAsync(this.words, this.at + IN_FLIGHT, inFlight);
      if (wait.async) await wait.value;
    }
  }
}
