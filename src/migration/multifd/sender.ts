/**
 * The source's multifd channels (multifd_send_*): pages are queued here instead of the main
 * stream and leave in packets of up to 128 pages, round robin over the channels; at every sync
 * point of the main stream (profile.multifd.sync) each channel gets a SYNC packet. Zero pages
 * travel as offsets only, where the release has them in packets (zero-page-detection=multifd);
 * the channel threads then tell them from the others, as QEMU's do.
 *
 * Each channel is a worker thread (send-worker.ts) with its own connection that writes pages
 * from the shared guest RAM; this side only decides which pages go where, and holds back when
 * a channel has more than IN_FLIGHT bytes not yet on its socket.
 */
import { Worker } from 'node:worker_threads';
import { PAGE_SIZE, type GuestRam } from '../../guest/ram.js';
import { activeProfile } from '../../profiles/index.js';
import type { MigrationUri } from '../channels/uri.js';
import { faults } from '../../faults/faults.js';
import { shareFaults } from '../../faults/in-thread.js';
import { HEADER_BYTES, INIT_BYTES, MULTIFD_FLAG_SYNC, PAGES_PER_PACKET } from './format.js';
import type { FromSendWorker, SendWorkerData, ToSendWorker } from './send-worker.js';

const WORKER = new URL('./send-worker.js', import.meta.url);
/** Bytes a channel may have queued before the migration waits for it. */
const IN_FLIGHT = 8 << 20;

/** What a packet counts: its bytes, and the pages its channel told apart (else none). */
export interface PacketSent {
  bytes: number;
  normal: number;
  zero: number;
}

class ChannelThread {
  error?: string;
  /** Bytes handed over and not yet written to the socket. */
  inFlight = 0;
  private ended = false;
  private wake?: () => void;
  private drainedReply?: (error?: string) => void;

  private constructor(
    private readonly worker: Worker,
    private readonly onSent: (sent: PacketSent) => void,
  ) {
    worker.on('message', (m: FromSendWorker) => {
      if (m.kind === 'sent') {
        this.inFlight -= m.charged;
        if (m.counted) this.onSent(m.counted);
      } else if (m.kind === 'failed') this.error ??= m.message;
      else if (m.kind === 'drained') {
        this.error ??= m.error;
        this.drainedReply?.(m.error);
      }
      this.notify();
    });
    worker.on('error', (err) => this.fail(`multifd: channel thread failed: ${err.message}`));
    worker.on('exit', () => !this.ended && this.fail('Channel was shut down'));
  }

  /** Starts the thread; resolves once its connection is open and greeted. */
  static start(data: Omit<SendWorkerData, 'faults'>, onSent: (sent: PacketSent) => void): Promise<ChannelThread> {
    const worker = new Worker(WORKER, { workerData: { ...data, faults: faults.forThread(data.id) } satisfies SendWorkerData });
    worker.unref();
    shareFaults(worker, data.id);
    return new Promise((resolve, reject) => {
      const first = (m: FromSendWorker): void => {
        if (m.kind === 'fault-fired') return; // shareFaults' business
        worker.off('message', first);
        if (m.kind === 'ready') resolve(new ChannelThread(worker, onSent));
        else reject(new Error(m.kind === 'failed' ? m.message : `multifd: unexpected ${m.kind}`));
      };
      worker.on('message', first);
      worker.once('error', reject);
    });
  }

  get usable(): boolean {
    return !this.error;
  }

  post(m: ToSendWorker, bytes = 0): void {
    this.inFlight += bytes;
    this.worker.postMessage(m);
  }

  /** Resolves once the channel has room (or is dead). */
  async room(): Promise<void> {
    while (this.usable && this.inFlight > IN_FLIGHT) await new Promise<void>((r) => (this.wake = r));
  }

  /** Resolves once everything handed over has left the thread's buffers. */
  drained(): Promise<void> {
    if (!this.usable) return Promise.resolve();
    return new Promise((resolve) => {
      this.drainedReply = () => resolve();
      this.post({ kind: 'drain' });
    });
  }

  /** Closes the connection after the last byte. */
  end(): void {
    this.ended = true;
    if (this.usable) this.post({ kind: 'end' });
  }

  /** qemu_file_shutdown(): the error is recorded now; the thread drops its socket. */
  shutdown(reason = 'Channel was shut down'): void {
    this.error ??= reason;
    this.post({ kind: 'shutdown', reason });
    this.notify();
  }

  private fail(message: string): void {
    this.error ??= message;
    this.drainedReply?.(message);
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}

export class MultifdSender {
  /** Bytes sent on the channels (multifd-bytes). */
  bytes = 0;
  /** Page offsets, each with whether it goes as a zero page (undefined: its channel finds out). */
  private queued: QueuedPage[] = [];
  private next = 0;
  private packetNum = 0n;

  private constructor(
    private readonly channels: ChannelThread[],
    private readonly onSent: (sent: PacketSent) => void,
  ) {}

  /**
   * Opens `count` channels to the destination, each starting with its greeting. `onSent` hears
   * what each packet counts: as it is handed to its channel, as 7.2's multifd_send_pages()
   * counts; or where its channel tells the pages apart (zero-page-detection=multifd), once it is
   * on the socket, as the channel threads of 9.0+ count.
   */
  static async open(uri: MigrationUri, count: number, ram: GuestRam, onSent: (sent: PacketSent) => void): Promise<MultifdSender> {
    if (uri.kind !== 'tcp' && uri.kind !== 'unix') throw new Error('multifd is not supported by current protocol');
    const channels: ChannelThread[] = [];
    const sender = new MultifdSender(channels, onSent);
    try {
      // One after another: the destination numbers the connections in the order they arrive.
      const profile = activeProfile().id;
      const data = { uri, ram: ram.backing, size: ram.size, ramId: ram.id, profile, knownZero: ram.knownZero };
      for (let id = 0; id < count; id++) channels.push(await ChannelThread.start({ ...data, id }, (sent) => sender.count(sent)));
    } catch (err) {
      for (const ch of channels) ch.shutdown();
      throw err;
    }
    return sender;
  }

  /** What the greetings count in multifd-bytes (profile.multifd.greetingCounted). */
  get greetingBytes(): number {
    return activeProfile().multifd.greetingCounted ? INIT_BYTES * this.channels.length : 0;
  }

  get error(): string | undefined {
    return this.channels.find((c) => c.error)?.error;
  }

  /**
   * multifd_queue_page(); `zero`: whether the page goes as a zero page (its data is not sent),
   * undefined for its channel to find out (zero-page-detection=multifd).
   */
  queue(offset: number, zero?: boolean): void {
    this.queued.push({ offset, zero });
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
    for (const ch of this.channels) await this.packet(MULTIFD_FLAG_SYNC, [], ch);
  }

  /**
   * The same, at once, for a sync in the middle of a pass over RAM (the scan wrapping round, 8.1+):
   * the pages after it must not be queued before it. Past a channel's room by one packet at most.
   */
  syncNow(): void {
    while (this.queued.length > 0) this.post(0, this.queued.splice(0, PAGES_PER_PACKET));
    for (const ch of this.channels) this.post(MULTIFD_FLAG_SYNC, [], ch);
  }

  async drained(): Promise<void> {
    await Promise.all(this.channels.map((ch) => ch.drained()));
  }

  end(): void {
    for (const ch of this.channels) ch.end();
  }

  shutdown(reason?: string): void {
    for (const ch of this.channels) ch.shutdown(reason);
  }

  private async packet(flags: number, pages: QueuedPage[], channel?: ChannelThread): Promise<void> {
    const ch = channel ?? this.channels[this.next++ % this.channels.length]!;
    await ch.room();
    this.post(flags, pages, ch);
  }

  private post(flags: number, pages: QueuedPage[], channel?: ChannelThread): void {
    const ch = channel ?? this.channels[this.next++ % this.channels.length]!;
    if (!ch.usable) return;
    // The pages of a packet are all told apart here or all in the channel.
    const detect = pages.length > 0 && pages[0]!.zero === undefined;
    const offsets = pages.filter((p) => !p.zero).map((p) => p.offset);
    const zeroOffsets = pages.filter((p) => p.zero).map((p) => p.offset);
    const size = HEADER_BYTES + offsets.length * PAGE_SIZE;
    if (!detect) this.count({ bytes: size, normal: 0, zero: 0 });
    ch.post({ kind: 'packet', flags, packetNum: this.packetNum++, offsets, zeroOffsets, detect }, size);
  }

  private count(sent: PacketSent): void {
    this.bytes += sent.bytes;
    this.onSent(sent);
  }
}

interface QueuedPage {
  offset: number;
  zero?: boolean;
}
