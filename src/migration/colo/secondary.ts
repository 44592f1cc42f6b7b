/**
 * The COLO secondary (colo_process_incoming_thread / colo_incoming_process_checkpoint in 7.2):
 * its guest runs between checkpoints; a checkpoint's RAM lands in a cache the size of RAM and
 * reaches guest RAM only once the whole checkpoint has arrived (colo_flush_ram_cache), together
 * with the pages the secondary's own guest dirtied meanwhile, so RAM equals the primary's at the
 * checkpoint. A checkpoint cut off half-way never touches guest RAM.
 */
import type { Logger } from 'pino';
import { Readable, type Writable } from 'node:stream';
import type { Guest } from '../../guest/guest.js';
import type { VmLoader } from '../loadvm.js';
import { flushColoCache, newColoCache, shareColoCache, type ColoCache } from './cache.js';
import { StreamReader } from '../stream/reader.js';
import type { Failover } from './failover.js';
import { ColoError, ColoMessage, encodeMessage, receiveMessage, receiveValue } from './protocol.js';
import type { ColoStats } from './stats.js';

/** Longest stretch of cache flushing between two turns of the event loop. */
const SLICE_MS = 4;

export interface SecondaryEnv {
  guest: Guest;
  input: StreamReader;
  output: Writable;
  loader: VmLoader;
  failover: Failover;
  stats: ColoStats;
  log: Logger;
  digest: boolean;
  /** Failover must start again once the checkpoint being loaded is in (the RELAUNCH path). */
  relaunch: () => void;
}

export class ColoSecondary {
  /** vmstate_loading: from the cache flush to the guest running again. */
  loading = false;

  constructor(private readonly env: SecondaryEnv) {}

  /** Runs until COLO ends; resolves to the COLO_EXIT reason. */
  async run(): Promise<'request' | 'error'> {
    const { guest, loader, failover } = this.env;
    failover.reset();
    // colo_init_ram_cache(): the cache starts as a copy of what the first migration loaded.
    const cache = newColoCache(guest.ram);
    loader.ramLoader.colo = cache;
    guest.ram.dirtyLog.clearAll(); // from now on, pages our own guest writes are tracked
    try {
      guest.output.startEpoch(0);
      guest.runState.start();
      this.send(ColoMessage.CHECKPOINT_READY);
      for (;;) {
        await this.checkpoint(cache);
        if (failover.status === 'relaunch') {
          // The failover that arrived mid-load starts again now that the checkpoint is in.
          this.env.relaunch();
          break;
        }
        if (failover.status !== 'none') {
          this.env.log.info('failover request');
          break;
        }
      }
    } catch (err) {
      this.env.log.error({ err: (err as Error).message }, 'COLO incoming checkpoint failed');
    } finally {
      loader.ramLoader.colo = undefined;
    }
    return failover.status === 'completed' ? 'request' : 'error';
  }

  private async checkpoint(cache: ColoCache): Promise<void> {
    const { guest, input, loader, stats, failover } = this.env;
    await receiveMessage(input, ColoMessage.CHECKPOINT_REQUEST);
    const paused = performance.now();
    if (!guest.runState.stop('colo')) guest.runState.set('colo');
    this.send(ColoMessage.CHECKPOINT_REPLY);
    await receiveMessage(input, ColoMessage.VMSTATE_SEND);
    const start = input.consumed;
    try {
      await loader.loadMain(input);
    } catch (err) {
      throw new ColoError(`Load VM's live state (ram) error: ${(err as Error).message}`);
    }
    const size = await receiveValue(input, ColoMessage.VMSTATE_SIZE);
    let device: Buffer;
    try {
      device = await input.bytes(size);
    } catch {
      throw new ColoError(`Got ${input.available} VMState data, less than expected ${size}`);
    }
    const bytes = input.consumed - start;
    this.send(ColoMessage.VMSTATE_RECEIVED);

    this.loading = true;
    await this.flush(cache);
    try {
      await loader.loadMain(new StreamReader(Readable.from([device])));
    } catch (err) {
      throw new ColoError(`COLO: load device state failed: ${(err as Error).message}`);
    }
    this.loading = false;
    stats.record(performance.now() - paused, bytes);
    guest.output.startEpoch(stats.checkpoints);
    guest.runState.start();
    if (this.env.digest) {
      stats.lastDigest = await guest.ram.sha256();
      this.env.log.info({ checkpoint: stats.checkpoints, sha256: stats.lastDigest }, 'COLO checkpoint RAM');
    }
    if (failover.status !== 'relaunch') this.send(ColoMessage.VMSTATE_LOADED);
  }

  /**
   * colo_flush_ram_cache(): every page the primary sent or our guest wrote, cache → RAM; on the
   * load thread where there is one (--page-thread on), as it loaded the checkpoint's pages.
   */
  private async flush(cache: ColoCache): Promise<void> {
    const ram = this.env.guest.ram;
    cache.received.absorb(ram.dirtyLog);
    const thread = this.env.loader.liveLoadThread;
    if (thread) await thread.flushColo(shareColoCache(cache));
    else await flushColoCache(ram, cache, SLICE_MS);
  }

  private send(msg: number): void {
    this.env.output.write(encodeMessage(msg));
  }
}
