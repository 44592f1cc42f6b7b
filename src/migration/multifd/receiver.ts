/**
 * The destination's multifd channels (multifd_recv_*): after its greeting each channel carries
 * packets whose pages go straight into RAM; a SYNC packet parks the channel until the main
 * stream reaches the matching EOS and has one SYNC from every channel (multifd_recv_sync_main).
 *
 * A channel whose socket can be handed over is read by a thread of its own (recv-worker.ts),
 * which copies its pages into the shared guest RAM, so the channels use the machine's other
 * cores; otherwise it is read here.
 */
import { Worker } from 'node:worker_threads';
import { PAGE_SIZE, type GuestRam } from '../../guest/ram.js';
import type { IncomingConnection } from '../channels/incoming-channel.js';
import { LoadError } from '../load-error.js';
import { StreamEnded, StreamReader, type ByteSource } from '../stream/reader.js';
import { decodeHeader, decodeInit, HEADER_BYTES, INIT_BYTES, MULTIFD_FLAG_SYNC } from './format.js';
import type { FromRecvWorker, RecvWorkerData } from './recv-worker.js';

const WORKER = new URL('./recv-worker.js', import.meta.url);

export interface ChannelHooks {
  greeted(id: number): void;
  /** A SYNC packet: resolves when the channel may go on. */
  sync(): Promise<void>;
}

/** multifd_recv_thread(): the greeting, then packets until the channel ends. */
export async function receivePackets(r: StreamReader, ram: Pick<GuestRam, 'bytes' | 'id' | 'size' | 'wrote'>, channels: number, hooks: ChannelHooks): Promise<void> {
  try {
    await r.need(INIT_BYTES);
    hooks.greeted(decodeInit(r.view(INIT_BYTES), channels));
    for (;;) {
      if (await r.atEnd()) return;
      await r.need(HEADER_BYTES);
      const h = decodeHeader(r.view(HEADER_BYTES), ram.id, ram.size);
      for (const off of h.offsets) {
        if (!r.ready(PAGE_SIZE)) await r.need(PAGE_SIZE);
        r.copyTo(ram.bytes, off, PAGE_SIZE);
        ram.wrote(off / PAGE_SIZE);
      }
      if (h.flags & MULTIFD_FLAG_SYNC) await hooks.sync();
    }
  } catch (err) {
    throw err instanceof StreamEnded ? new Error('multifd: the channel ended in the middle of a packet') : err;
  }
}

export class MultifdReceiver {
  private readonly ids = new Set<number>();
  private syncs = 0;
  private parked: Array<() => void> = [];
  private wake?: () => void;
  private failure?: string;
  private allArrived!: () => void;
  /** Resolves once every channel has greeted. */
  readonly ready: Promise<void>;
  private readonly hooks: ChannelHooks = {
    greeted: (id) => {
      this.ids.add(id);
      if (this.ids.size === this.channels) this.allArrived();
    },
    sync: () =>
      new Promise<void>((go) => {
        this.syncs++;
        this.parked.push(go);
        this.notify();
      }),
  };

  constructor(
    private readonly ram: GuestRam,
    private readonly channels: number,
  ) {
    this.ready = new Promise((r) => (this.allArrived = r));
  }

  /** A new connection: read by a thread of its own where it can be handed over, else here. */
  async addChannel(conn: IncomingConnection): Promise<void> {
    const fd = conn.detach?.();
    if (fd === undefined) return this.readHere(conn.input);
    const data: RecvWorkerData = { fd, ram: this.ram.shared, knownZero: this.ram.knownZero, ramId: this.ram.id, channels: this.channels };
    const worker = new Worker(WORKER, { workerData: data });
    worker.unref();
    worker.on('message', (m: FromRecvWorker) => {
      if (m.kind === 'greeted') this.hooks.greeted(m.id);
      else if (m.kind === 'sync') void this.hooks.sync().then(() => worker.postMessage('go'));
      else this.fail(m.message);
    });
    worker.on('error', (err) => this.fail(`multifd: channel thread failed: ${err.message}`));
  }

  private async readHere(input: ByteSource): Promise<void> {
    try {
      await receivePackets(new StreamReader(input), this.ram, this.channels, this.hooks);
    } catch (err) {
      this.fail((err as Error).message);
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
