/**
 * The destination's multifd channels (multifd_recv_*). Every connection after the main one is
 * a channel candidate: its 64-byte greeting is read and checked here first (magic, version,
 * uuid, id in range and not yet set up), and a bad or short one is refused with QEMU 7.2's
 * report and closed, without costing a thread. A good channel carries packets whose pages go
 * straight into RAM; a SYNC packet parks the channel until the main stream reaches the matching
 * EOS and has one SYNC from every channel (multifd_recv_sync_main).
 *
 * A channel whose socket can be handed over is read by a thread of its own (recv-worker.ts),
 * which copies its pages into the shared guest RAM, so the channels use the machine's other
 * cores; otherwise it is read here.
 */
import { Worker } from 'node:worker_threads';
import { faults } from '../../faults/faults.js';
import { shareFaults } from '../../faults/in-thread.js';
import { pageOffset, PAGE_SIZE, type GuestRam } from '../../guest/ram.js';
import { activeProfile } from '../../profiles/index.js';
import type { IncomingConnection } from '../channels/incoming-channel.js';
import { LoadError } from '../load-error.js';
import { StreamEnded, StreamReader } from '../stream/reader.js';
import {
  checkDeviceState,
  decodeCommonHeader,
  decodeHeader,
  decodeInit,
  DEVICE_STATE_HEADER_BYTES,
  HEADER_BYTES,
  INIT_BYTES,
  isDeviceState,
  MULTIFD_FLAG_SYNC,
} from './format.js';
import type { FromRecvWorker, RecvWorkerData } from './recv-worker.js';

const WORKER = new URL('./recv-worker.js', import.meta.url);

/** What a channel writes into: guest RAM, or its shared segments on a channel's thread. */
export type ChannelRam = Pick<GuestRam, 'segment' | 'id' | 'size' | 'wrote' | 'zeroPage' | 'willWrite'>;

/** multifd_recv_thread() after the greeting: packets until the channel ends. */
export async function receivePackets(r: StreamReader, ram: ChannelRam, sync: () => Promise<void>, channel = 0): Promise<void> {
  try {
    for (;;) {
      if (await r.atEnd()) return;
      // The common 12 bytes say which header follows (10.0: RAM or device state).
      await r.need(12);
      const common = Buffer.from(r.view(12)); // a copy: the next need() may move the buffer
      const deviceState = isDeviceState(decodeCommonHeader(common));
      const rest = (deviceState ? DEVICE_STATE_HEADER_BYTES : HEADER_BYTES) - 12;
      await r.need(rest);
      const header = Buffer.concat([common, r.view(rest)]);
      if (deviceState) checkDeviceState(header);
      const h = decodeHeader(header, ram.id, ram.size, channel);
      for (const off of h.zeroOffsets) ram.zeroPage(off / PAGE_SIZE); // multifd_recv_zero_page_process()
      for (const off of h.offsets) {
        const page = off / PAGE_SIZE;
        if (!r.ready(PAGE_SIZE)) await r.need(PAGE_SIZE);
        ram.willWrite(page);
        r.copyTo(ram.segment(page), pageOffset(page), PAGE_SIZE);
        ram.wrote(page);
      }
      if (h.flags & MULTIFD_FLAG_SYNC) await sync();
    }
  } catch (err) {
    throw err instanceof StreamEnded ? new Error('multifd: the channel ended in the middle of a packet') : err;
  }
}

export class MultifdReceiver {
  private readonly ids = new Set<number>();
  /** Connections whose greeting has not come in full yet. */
  private readonly greeting = new Set<IncomingConnection>();
  private readonly workers = new Set<Worker>();
  private syncs = 0;
  private parked: Array<() => void> = [];
  private wake?: () => void;
  private failure?: string;
  /** The main channel has ended: channels that have not come by now never will count. */
  private mainEnded = false;
  private allArrived!: () => void;
  /** Resolves once every channel has greeted. */
  readonly ready: Promise<void>;

  constructor(
    private readonly ram: GuestRam,
    private readonly channels: number,
    /** Where QEMU's error_report() lines go. */
    private readonly report: (line: string) => void,
    /** A bad channel where that fails the migration (profile.multifd.badChannelIsFatal). */
    private readonly fatal: (line: string) => void = report,
  ) {
    this.ready = new Promise((r) => (this.allArrived = r));
  }

  /**
   * multifd_recv_new_channel(): the greeting, checked; then a thread (or this one) reads it.
   * `reader`: the connection's reader, where its first bytes were looked at already.
   */
  async addChannel(conn: IncomingConnection, reader = new StreamReader(conn.input)): Promise<void> {
    this.greeting.add(conn);
    let id: number;
    try {
      await reader.need(INIT_BYTES);
      id = decodeInit(reader.view(INIT_BYTES), this.channels);
    } catch (err) {
      const reason = err instanceof StreamEnded ? 'Unexpected end-of-file before all data were read' : (err as Error).message;
      return this.refuse(conn, `failed to receive packet via multifd channel ${this.ids.size}: ${reason}`);
    }
    if (this.ids.has(id)) return this.refuse(conn, `multifd: received id '${id}' already setup'`);
    this.greeting.delete(conn);
    this.ids.add(id);
    if (this.ids.size === this.channels) this.allArrived();
    if (conn.detach) {
      // Nothing more is read here: what was read past the greeting goes to the thread with it.
      conn.input.pause();
      this.startThread(conn.detach(), reader.takeBuffered(), id);
    } else {
      receivePackets(reader, this.ram, () => this.channelSync(), id).catch((err: Error) => this.fail(err.message));
    }
  }

  private refuse(conn: IncomingConnection, line: string): void {
    this.greeting.delete(conn);
    conn.close();
    if (activeProfile().multifd.badChannelIsFatal) this.fatal(line);
    else this.report(line);
  }

  private startThread(fd: number, prefix: Buffer, channel: number): void {
    const data: RecvWorkerData = {
      fd, prefix, ram: this.ram.backing, size: this.ram.size, knownZero: this.ram.knownZero!, faultedIn: this.ram.faultedIn, ramId: this.ram.id, channel, profile: activeProfile().id,
      faults: faults.forThread(channel),
    };
    const worker = new Worker(WORKER, { workerData: data });
    worker.unref();
    shareFaults(worker, channel);
    this.workers.add(worker);
    worker.on('message', (m: FromRecvWorker) => {
      if (m.kind === 'sync') void this.channelSync().then(() => worker.postMessage('go'));
      else if (m.kind === 'failed') this.fail(m.message);
    });
    worker.on('error', (err) => this.fail(`multifd: channel thread failed: ${err.message}`));
    worker.on('exit', () => this.workers.delete(worker));
  }

  /** A channel's SYNC packet: it waits until the main stream's EOS has one from every channel. */
  private channelSync(): Promise<void> {
    return new Promise<void>((go) => {
      this.syncs++;
      this.parked.push(go);
      this.notify();
    });
  }

  /**
   * The main channel has ended. With every channel there, their SYNCs may still be on their way;
   * with one missing, the main stream can never pass its next EOS (7.2 would wait forever).
   */
  mainChannelEnded(): void {
    this.mainEnded = true;
    this.notify();
  }

  /** At an EOS of the main stream: one SYNC from every channel, then they all go on. */
  async syncMain(): Promise<void> {
    while (this.syncs < this.channels) {
      if (this.failure) throw new LoadError('EINVAL', this.failure);
      if (this.mainEnded && this.ids.size < this.channels) throw new LoadError('EIO');
      await new Promise<void>((r) => (this.wake = r));
    }
    this.syncs -= this.channels;
    const parked = this.parked;
    this.parked = [];
    for (const go of parked) go();
  }

  /** The error a channel failed with, if one did. */
  get error(): string | undefined {
    return this.failure;
  }

  /** The migration is over: connections still greeting are closed, threads stopped. */
  close(): void {
    for (const conn of this.greeting) conn.close();
    this.greeting.clear();
    for (const w of this.workers) void w.terminate();
  }

  private fail(message: string): void {
    this.failure ??= message;
    this.notify();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }
}
