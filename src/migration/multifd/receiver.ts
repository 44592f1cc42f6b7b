/**
 * The destination's multifd channels (multifd_recv_*): after its greeting each channel carries
 * packets whose pages go straight into RAM; a SYNC packet parks the channel until the main
 * stream reaches the matching EOS and has one SYNC from every channel (multifd_recv_sync_main).
 */
import { PAGE_SIZE, type GuestRam } from '../../guest/ram.js';
import { LoadError } from '../load-error.js';
import { StreamEnded, StreamReader, type ByteSource } from '../stream/reader.js';
import { decodeHeader, decodeInit, HEADER_BYTES, INIT_BYTES, MULTIFD_FLAG_SYNC } from './format.js';

export class MultifdReceiver {
  private readonly ids = new Set<number>();
  private syncs = 0;
  private parked: Array<() => void> = [];
  private wake?: () => void;
  private failure?: string;
  private allArrived!: () => void;
  /** Resolves once every channel has greeted. */
  readonly ready: Promise<void>;

  constructor(
    private readonly ram: GuestRam,
    private readonly channels: number,
  ) {
    this.ready = new Promise((r) => (this.allArrived = r));
  }

  /** A new connection: its greeting, then its packets until it ends. */
  async addChannel(input: ByteSource): Promise<void> {
    const r = new StreamReader(input);
    try {
      await r.need(INIT_BYTES);
      const id = decodeInit(r.view(INIT_BYTES), this.channels);
      this.ids.add(id);
      if (this.ids.size === this.channels) this.allArrived();
      for (;;) {
        if (await r.atEnd()) return;
        await r.need(HEADER_BYTES);
        const h = decodeHeader(r.view(HEADER_BYTES), this.ram.id, this.ram.size);
        for (const off of h.offsets) {
          if (!r.ready(PAGE_SIZE)) await r.need(PAGE_SIZE);
          r.copyTo(this.ram.bytes, off, PAGE_SIZE);
        }
        if (h.flags & MULTIFD_FLAG_SYNC) {
          this.syncs++;
          this.notify();
          await new Promise<void>((res) => this.parked.push(res));
        }
      }
    } catch (err) {
      this.failure ??= err instanceof StreamEnded ? 'multifd: the channel ended in the middle of a packet' : (err as Error).message;
      this.notify();
    }
  }

  /** At an EOS of the main stream: one SYNC from every channel, then they all go on. */
  async syncMain(): Promise<void> {
    while (this.syncs < this.channels) {
      if (this.failure) throw new LoadError('EINVAL', this.failure);
      await new Promise<void>((r) => (this.wake = r));
    }
    this.syncs -= this.channels;
    const parked = this.parked;
    this.parked = [];
    for (const go of parked) go();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}
