/**
 * The source's multifd channels (multifd_send_*): non-zero pages are queued here instead of the
 * main stream and leave in packets of up to 128 pages, round robin over the channels; at every
 * EOS of the main stream each channel gets a SYNC packet.
 */
import { PAGE_SIZE, type GuestRam } from '../../guest/ram.js';
import { OutgoingChannel } from '../channels/outgoing-channel.js';
import type { MigrationUri } from '../channels/uri.js';
import { encodeHeader, encodeInit, MULTIFD_FLAG_SYNC, PAGES_PER_PACKET } from './format.js';

export class MultifdSender {
  /** Bytes sent on the channels (multifd-bytes). */
  bytes = 0;
  private queued: number[] = [];
  private next = 0;
  private packetNum = 0n;

  private constructor(
    private readonly channels: OutgoingChannel[],
    private readonly ram: GuestRam,
    private readonly onSent: (bytes: number) => void,
  ) {}

  /** Opens `count` channels to the destination, each starting with its greeting. */
  static async open(uri: MigrationUri, count: number, ram: GuestRam, onSent: (bytes: number) => void): Promise<MultifdSender> {
    if (uri.kind !== 'tcp' && uri.kind !== 'unix') throw new Error('multifd is not supported by current protocol');
    const channels: OutgoingChannel[] = [];
    try {
      for (let id = 0; id < count; id++) {
        const ch = await OutgoingChannel.connect(uri, () => undefined);
        channels.push(ch);
        await ch.write([encodeInit(id)]);
      }
    } catch (err) {
      for (const ch of channels) ch.shutdown();
      throw err;
    }
    return new MultifdSender(channels, ram, onSent);
  }

  get error(): string | undefined {
    return this.channels.find((c) => c.error)?.error;
  }

  queue(offset: number): void {
    this.queued.push(offset);
  }

  /** Sends every full packet's worth of queued pages (and the rest too, if `all`). */
  async send(all = false): Promise<void> {
    while (this.queued.length >= PAGES_PER_PACKET || (all && this.queued.length > 0)) {
      await this.packet(0, this.queued.splice(0, PAGES_PER_PACKET));
    }
  }

  /** multifd_send_sync_main(): the queue flushed, then one SYNC packet on every channel. */
  async sync(): Promise<void> {
    await this.send(true);
    for (let i = 0; i < this.channels.length; i++) await this.packet(MULTIFD_FLAG_SYNC, [], this.channels[i]);
  }

  async drained(): Promise<void> {
    for (const ch of this.channels) await ch.drained();
  }

  end(): void {
    for (const ch of this.channels) ch.end();
  }

  shutdown(reason?: string): void {
    for (const ch of this.channels) ch.shutdown(reason);
  }

  private async packet(flags: number, offsets: number[], channel?: OutgoingChannel): Promise<void> {
    const ch = channel ?? this.channels[this.next++ % this.channels.length]!;
    const header = encodeHeader({ flags, normal: offsets.length, packetNum: this.packetNum++, block: this.ram.id, offsets });
    const data = Buffer.allocUnsafe(offsets.length * PAGE_SIZE);
    offsets.forEach((off, i) => this.ram.bytes.copy(data, i * PAGE_SIZE, off, off + PAGE_SIZE));
    const size = header.length + data.length;
    this.bytes += size;
    this.onSent(size);
    await ch.write(offsets.length ? [header, data] : [header]);
  }
}

