/**
 * multifd_queue_page() and multifd_send_pages(): pages queued for the channels leave in packets of
 * up to 128 pages, round robin; at a sync point each channel gets a SYNC packet. Used by the
 * thread that scans the pages: the migration's, or the page thread during its slices. Between
 * them passes only the cursor (the partial packet, the next channel, the next packet number), so
 * the packets are the same whichever thread fills them.
 */
import { PAGE_SIZE } from '../../guest/ram.js';
import { HEADER_BYTES, MULTIFD_FLAG_SYNC, PAGES_PER_PACKET } from './format.js';
import type { ChannelState } from './channel-state.js';
import type { ToSendWorker } from './send-worker.js';

/** A page offset, with whether it goes as a zero page (undefined: its channel finds out). */
export interface QueuedPage {
  offset: number;
  zero?: boolean;
}

/** The queue's place, handed between the threads that fill it. */
export interface PacketCursor {
  queued: QueuedPage[];
  next: number;
  packetNum: bigint;
}

/** A channel as a poster sees it: its shared state, and how a message reaches its thread. */
export interface Lane {
  readonly state: ChannelState;
  post(m: ToSendWorker): void;
}

/** A packet's bytes as counted where it is handed over (7.2's multifd_send_pages()). */
export type CountHandedOver = (bytes: number) => void;

export function newCursor(): PacketCursor {
  return { queued: [], next: 0, packetNum: 0n };
}

export class PacketQueue {
  /** Bytes of the packets this queue posted, as charged in flight. */
  charged = 0;

  constructor(
    private readonly lanes: Lane[],
    public cursor: PacketCursor,
    private readonly countHandedOver: CountHandedOver,
  ) {}

  /**
   * multifd_queue_page(); `zero`: whether the page goes as a zero page (its data is not sent),
   * undefined for its channel to find out (zero-page-detection=multifd).
   */
  queue(offset: number, zero?: boolean): void {
    this.cursor.queued.push({ offset, zero });
  }

  /** A packet's worth of pages is queued. */
  get full(): boolean {
    return this.cursor.queued.length >= PAGES_PER_PACKET;
  }

  /** Whether a channel failed: its pages are lost, so the migration will fail. */
  get failed(): boolean {
    return this.lanes.some((l) => l.state.failed);
  }

  /** Sends every full packet's worth of queued pages (and the rest too, if `all`). */
  async send(all = false): Promise<void> {
    const { queued } = this.cursor;
    while (queued.length >= PAGES_PER_PACKET || (all && queued.length > 0)) {
      await this.packet(0, queued.splice(0, PAGES_PER_PACKET));
    }
  }

  /** multifd_send_sync_main(): the queue flushed, then one SYNC packet on every channel. */
  async sync(): Promise<void> {
    await this.send(true);
    for (const lane of this.lanes) await this.packet(MULTIFD_FLAG_SYNC, [], lane);
  }

  /**
   * The same, at once, for a sync in the middle of a pass over RAM (the scan wrapping round, 8.1+):
   * the pages after it must not be queued before it. Past a channel's room by one packet at most.
   */
  syncNow(): void {
    const { queued } = this.cursor;
    while (queued.length > 0) this.post(0, queued.splice(0, PAGES_PER_PACKET));
    for (const lane of this.lanes) this.post(MULTIFD_FLAG_SYNC, [], lane);
  }

  private async packet(flags: number, pages: QueuedPage[], lane?: Lane): Promise<void> {
    const to = lane ?? this.nextLane();
    await to.state.room();
    this.post(flags, pages, to);
  }

  private post(flags: number, pages: QueuedPage[], lane = this.nextLane()): void {
    const { state } = lane;
    if (state.failed) return;
    // The pages of a packet are all told apart here or all in the channel.
    const detect = pages.length > 0 && pages[0]!.zero === undefined;
    const offsets = pages.filter((p) => !p.zero).map((p) => p.offset);
    const zeroOffsets = pages.filter((p) => p.zero).map((p) => p.offset);
    const size = HEADER_BYTES + offsets.length * PAGE_SIZE;
    if (!detect) this.countHandedOver(size);
    state.charge(size, detect);
    this.charged += size;
    lane.post({ kind: 'packet', seq: state.nextSeq(), flags, packetNum: this.cursor.packetNum++, offsets, zeroOffsets, detect, charged: size });
  }

  private nextLane(): Lane {
    return this.lanes[this.cursor.next++ % this.lanes.length]!;
  }
}
