/**
 * The COLO primary (colo_process_checkpoint / colo_do_checkpoint_transaction in 7.2): after the
 * first full migration it waits for checkpoint-ready, runs its guest, and takes a checkpoint
 * each time it is woken: by the x-checkpoint-delay timer, by a change of that delay, or by the
 * output comparison. Any failure ends the loop; COLO_EXIT then says `request` if a failover
 * ended it and `error` otherwise, and the caller waits for x-colo-lost-heartbeat.
 */
import type { Logger } from 'pino';
import type { Guest } from '../../guest/guest.js';
import type { Readable } from 'node:stream';
import { faults, type ChannelEnd } from '../../faults/faults.js';
import { readThroughFaults } from '../../faults/channel-io.js';
import { StreamReader } from '../stream/reader.js';
import { ColoCompare } from './compare.js';
import type { Failover } from './failover.js';
import { ColoMessage, encodeMessage, receiveMessage } from './protocol.js';
import type { ColoStats } from './stats.js';

/** What the primary needs of the migration under it. */
export interface PrimaryLink {
  /** The return path: messages from the secondary. */
  readonly input: StreamReader;
  send(bytes: Buffer): Promise<void>;
  /**
   * qemu_savevm_live_state(): the dirty RAM as an END section, then EOF; resolves to its size.
   * `halfway`, if given, is called once half of the pages have gone out.
   */
  saveLiveRam(halfway?: () => void): Promise<number>;
  /** qemu_save_device_state(): FULL sections and EOF, no header. */
  deviceState(): Buffer;
}

/** The primary's end of the compare connection, as faults name it (src/faults). */
export const COMPARE_END: ChannelEnd = { channel: 'colo-compare', side: 'receive' };

/** Points in a transaction where a test may have the primary die (__org.qmigd_colo-crash-at, or a fault at colo:POINT). */
export type CrashPoint = 'before-request' | 'after-reply' | 'mid-ram' | 'after-vmstate-received' | 'before-vmstate-loaded';

export interface PrimaryEnv {
  guest: Guest;
  link: PrimaryLink;
  failover: Failover;
  delayMs: () => number;
  stats: ColoStats;
  log: Logger;
  /** Hash RAM at every checkpoint (--colo-checkpoint-digest). */
  digest: boolean;
  crashAt: () => CrashPoint | undefined;
  stillColo: () => boolean;
  /** The secondary's output packets, if a compare channel could be opened. */
  secondaryOutput?: Readable;
}

export class ColoPrimary {
  private pending = false;
  private wake?: () => void;
  private timer?: NodeJS.Timeout;
  readonly compare: ColoCompare;

  constructor(private readonly env: PrimaryEnv) {
    this.compare = new ColoCompare(() => {
      env.stats.miscompares++;
      this.notify();
    });
  }

  /** colo_checkpoint_notify(): one checkpoint soon, and the period restarts from now. */
  notify(): void {
    this.pending = true;
    this.arm();
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Runs until COLO ends; resolves to the COLO_EXIT reason. */
  async run(): Promise<'request' | 'error'> {
    const { env } = this;
    env.failover.reset();
    const unhook = this.hookCompare();
    try {
      await receiveMessage(env.link.input, ColoMessage.CHECKPOINT_READY);
      env.guest.output.startEpoch(0);
      env.guest.runState.start();
      this.arm();
      for (;;) {
        if (env.failover.status !== 'none') {
          env.log.info('failover request');
          break;
        }
        while (!this.pending) await new Promise<void>((r) => (this.wake = r));
        this.pending = false;
        if (env.failover.status !== 'none' || !env.stillColo()) break;
        await this.transaction();
      }
    } catch (err) {
      env.log.error({ err: (err as Error).message }, 'COLO checkpoint failed');
    } finally {
      clearTimeout(this.timer);
      unhook();
    }
    return env.failover.status === 'completed' ? 'request' : 'error';
  }

  /** Feeds both guests' output to colo-compare, when the secondary's reaches us. */
  private hookCompare(): () => void {
    const { env, compare } = this;
    const theirs = env.secondaryOutput;
    if (!theirs) return () => undefined;
    const unhook = env.guest.output.onPacket((p) => compare.fromPrimary(p));
    const reader = new StreamReader(theirs);
    void (async () => {
      try {
        for (;;) {
          await reader.need(12);
          let packet = reader.view(12);
          if (faults.any) packet = await readThroughFaults(COMPARE_END, Buffer.from(packet));
          compare.fromSecondary({ epoch: packet.readUInt32BE(0), seq: packet.readUInt32BE(4), payload: packet.readUInt32BE(8) });
        }
      } catch {
        /* the secondary went away: the checkpoint loop finds out on its own */
      }
    })();
    return () => {
      unhook();
      compare.stop();
      theirs.destroy();
    };
  }

  private async transaction(): Promise<void> {
    const { guest, link, failover, stats } = this.env;
    this.crash('before-request');
    await link.send(encodeMessage(ColoMessage.CHECKPOINT_REQUEST));
    await receiveMessage(link.input, ColoMessage.CHECKPOINT_REPLY);
    this.crash('after-reply');
    if (failover.status !== 'none') throw new Error('failover request');
    const paused = performance.now();
    if (!guest.runState.stop('colo')) guest.runState.set('colo');
    if (this.env.digest) stats.lastDigest = undefined;
    const digest = this.env.digest ? await guest.ram.sha256() : undefined;
    // Logged now: a test that kills us later in this transaction still learns it.
    if (digest) this.env.log.info({ checkpoint: stats.checkpoints + 1, sha256: digest }, 'COLO checkpoint RAM');
    await link.send(encodeMessage(ColoMessage.VMSTATE_SEND));
    const midRam = this.env.crashAt() === 'mid-ram' || faults.waitsAt('colo:mid-ram');
    const ramBytes = await link.saveLiveRam(midRam ? () => this.crash('mid-ram') : undefined);
    const device = link.deviceState();
    await link.send(Buffer.concat([encodeMessage(ColoMessage.VMSTATE_SIZE, device.length), device]));
    await receiveMessage(link.input, ColoMessage.VMSTATE_RECEIVED);
    this.crash('after-vmstate-received');
    // The event is reset here: wake-ups during the transaction so far are covered by it.
    this.pending = false;
    this.compare.released(stats.checkpoints + 1);
    this.crash('before-vmstate-loaded');
    await receiveMessage(link.input, ColoMessage.VMSTATE_LOADED);
    // The same count the secondary makes: RAM section and EOF, vmstate-size, device state.
    stats.record(performance.now() - paused, ramBytes + 12 + device.length);
    guest.output.startEpoch(stats.checkpoints);
    guest.runState.start();
    if (digest) stats.lastDigest = digest;
  }

  private arm(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.notify(), this.env.delayMs());
    this.timer.unref();
  }

  /**
   * A crash on purpose, for tests: the process dies as if killed, sockets and all. Asked for by
   * __org.qmigd_colo-crash-at, or by a fault at `colo:POINT` (src/faults), which may also hang.
   */
  private crash(point: CrashPoint): void {
    if (faults.any) faults.coloPoint(point);
    if (this.env.crashAt() !== point) return;
    this.env.log.warn({ point }, 'COLO: crashing on request');
    process.kill(process.pid, 'SIGKILL');
  }
}
