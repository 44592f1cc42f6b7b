/**
 * The source's multifd channels (multifd_send_*): pages are queued here instead of the main
 * stream and leave in packets of up to 128 pages, round robin over the channels (PacketQueue); at
 * every sync point of the main stream (profile.multifd.sync) each channel gets a SYNC packet. Zero
 * pages travel as offsets only, where the release has them in packets
 * (zero-page-detection=multifd); the channel threads then tell them from the others, as QEMU's do.
 *
 * Each channel is a worker thread (send-worker.ts) with its own connection that writes pages
 * from the shared guest RAM; this side only decides which pages go where, and holds back when
 * a channel has more than IN_FLIGHT_LIMIT bytes not yet on its socket. The page thread, while it
 * scans, posts packets to the channels itself, through a port of its own to each (pageThreadPorts).
 */
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import type { GuestRam } from '../../guest/ram.js';
import { activeProfile } from '../../profiles/index.js';
import type { MigrationUri } from '../channels/uri.js';
import { faults } from '../../faults/faults.js';
import { shareFaults } from '../../faults/in-thread.js';
import { INIT_BYTES } from './format.js';
import { ChannelState } from './channel-state.js';
import { newCursor, PacketQueue, type Lane, type PacketCursor } from './packet-queue.js';
import type { FromSendWorker, SendWorkerData, ToSendWorker } from './send-worker.js';

const WORKER = new URL('./send-worker.js', import.meta.url);

/** What a packet counts: its bytes, and the pages its channel told apart (else none). */
export interface PacketSent {
  bytes: number;
  normal: number;
  zero: number;
}

/** What the page thread needs to post to the channels: a port to each, and their shared state. */
export interface ChannelPorts {
  ports: MessagePort[];
  state: SharedArrayBuffer;
}

class ChannelThread implements Lane {
  error?: string;
  private ended = false;
  private drainedReply?: (error?: string) => void;

  private constructor(
    private readonly worker: Worker,
    readonly state: ChannelState,
    private readonly onSent: (sent: PacketSent) => void,
  ) {
    worker.on('message', (m: FromSendWorker) => {
      if (m.kind === 'sent') this.onSent(m.counted);
      else if (m.kind === 'failed') this.fail(m.message);
      else if (m.kind === 'drained') {
        if (m.error) this.fail(m.error);
        this.drainedReply?.(m.error);
      }
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
        if (m.kind === 'ready') resolve(new ChannelThread(worker, ChannelState.of(data.state, data.id), onSent));
        else reject(new Error(m.kind === 'failed' ? m.message : `multifd: unexpected ${m.kind}`));
      };
      worker.on('message', first);
      worker.once('error', reject);
    });
  }

  post(m: ToSendWorker): void {
    this.worker.postMessage(m);
  }

  /** A second way in, for the page thread: the other end of the returned port. */
  pageThreadPort(): MessagePort {
    const { port1, port2 } = new MessageChannel();
    this.worker.postMessage({ kind: 'port', port: port1 } satisfies ToSendWorker, [port1]);
    return port2;
  }

  /** Resolves once everything handed over has left the thread's buffers. */
  drained(): Promise<void> {
    if (this.state.failed) return Promise.resolve();
    return new Promise((resolve) => {
      this.drainedReply = () => resolve();
      this.post({ kind: 'drain', seq: this.state.nextSeq() });
    });
  }

  /** Closes the connection after the last byte. */
  end(): void {
    this.ended = true;
    if (!this.state.failed) this.post({ kind: 'end', seq: this.state.nextSeq() });
  }

  /** qemu_file_shutdown(): the error is recorded now; the thread drops its socket. */
  shutdown(reason = 'Channel was shut down'): void {
    this.fail(reason);
    this.post({ kind: 'shutdown', reason });
  }

  private fail(message: string): void {
    this.error ??= message;
    this.state.fail();
    this.drainedReply?.(message);
  }
}

export class MultifdSender {
  /** Bytes sent on the channels (multifd-bytes). */
  bytes = 0;
  private readonly packets: PacketQueue;

  private constructor(
    private readonly channels: ChannelThread[],
    private readonly memory: SharedArrayBuffer,
    private readonly onSent: (sent: PacketSent) => void,
  ) {
    this.packets = new PacketQueue(channels, newCursor(), (bytes) => this.count({ bytes, normal: 0, zero: 0 }));
  }

  /**
   * Opens `count` channels to the destination, each starting with its greeting. `onSent` hears
   * what each packet counts: as it is handed to its channel, as 7.2's multifd_send_pages()
   * counts; or where its channel tells the pages apart (zero-page-detection=multifd), once it is
   * on the socket, as the channel threads of 9.0+ count.
   */
  static async open(uri: MigrationUri, count: number, ram: GuestRam, onSent: (sent: PacketSent) => void): Promise<MultifdSender> {
    if (uri.kind !== 'tcp' && uri.kind !== 'unix') throw new Error('multifd is not supported by current protocol');
    const channels: ChannelThread[] = [];
    const memory = ChannelState.memory(count);
    const sender = new MultifdSender(channels, memory, onSent);
    try {
      // One after another: the destination numbers the connections in the order they arrive.
      const profile = activeProfile().id;
      const data = { uri, ram: ram.backing, size: ram.size, ramId: ram.id, profile, knownZero: ram.knownZero, state: memory };
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
   * Bytes handed to the channels that no counter has seen yet (9.0+ counts a packet once it is
   * on the socket): the rate limit counts them, as QEMU's channels hold one packet, not megabytes.
   */
  get uncounted(): number {
    return this.channels.reduce((n, c) => n + c.state.uncounted, 0);
  }

  /** The queue's place, for the page thread's next slice; it hands it back after. */
  get cursor(): PacketCursor {
    return this.packets.cursor;
  }

  /** What a slice of the page thread did to the queue: its place, and the bytes it handed over. */
  absorb(slice: { cursor: PacketCursor; handedOver: number }): void {
    this.packets.cursor = slice.cursor;
    if (slice.handedOver) this.count({ bytes: slice.handedOver, normal: 0, zero: 0 });
  }

  /** For the page thread: a port of its own to each channel, and the channels' shared state. */
  pageThreadPorts(): ChannelPorts {
    return { ports: this.channels.map((c) => c.pageThreadPort()), state: this.memory };
  }

  queue(offset: number, zero?: boolean): void {
    this.packets.queue(offset, zero);
  }

  send(all = false): Promise<void> {
    return this.packets.send(all);
  }

  sync(): Promise<void> {
    return this.packets.sync();
  }

  syncNow(): void {
    this.packets.syncNow();
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

  private count(sent: PacketSent): void {
    this.bytes += sent.bytes;
    this.onSent(sent);
  }
}
