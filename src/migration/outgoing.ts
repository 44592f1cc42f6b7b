/**
 * One outgoing pre-copy migration, as QEMU 7.2's migration_thread() runs it:
 *
 *   setup ──► active ──(pending < threshold)──► [pre-switchover ─migrate-continue─► device] ──► completed
 *     │          │                                        │
 *     └──────────┴──────── error ──► failed ◄─────────────┘      any running state ─cancel─► cancelling ──► cancelled
 *
 * The work runs on the event loop in slices of a few milliseconds (each slice yields, and waits
 * for the socket when it is full), so QMP answers between slices. Bandwidth is spent in 100 ms
 * windows of max-bandwidth/10 bytes; at the end of each window the measured bandwidth times
 * downtime-limit gives the threshold below which the guest is stopped and the rest is sent.
 */
import type { Logger } from 'pino';
import type { Guest } from '../guest/guest.js';
import type { MigrationGlobals } from './globals.js';
import type { Capabilities, MigrationParameters } from './params.js';
import { PageCacheAllocationError } from './ram/page-cache.js';
import { RamSaver } from './ram/ram-save.js';
import type { Readable } from 'node:stream';
import { COMPARE_MAGIC, Command, RAM_SECTION_VERSION, RamFlag, RP_MAX_LENGTH, RpMessage, Section } from './stream/constants.js';
import { StreamEnded, StreamReader } from './stream/reader.js';
import { sectionIds, writeCommand, writeDeviceState, writeEof, writeFooter, writeHeader, writeSectionPart, writeSectionStart } from './stream/vmstate.js';
import { activeProfile } from '../profiles/index.js';
import { be32, StreamWriter } from './stream/writer.js';
import { OutgoingChannel } from './channels/outgoing-channel.js';
import { MultifdSender } from './multifd/sender.js';
import { MappedRamWriter } from './ram/mapped-ram.js';
import { PageThread } from './ram/page-thread.js';
import { faults, type ChannelEnd } from '../faults/faults.js';
import { readThroughFaults } from '../faults/channel-io.js';
import type { Failover } from './colo/failover.js';
import { ColoPrimary, COMPARE_END, type CrashPoint } from './colo/primary.js';
import type { ColoStats } from './colo/stats.js';
import type { MigrationUri } from './channels/uri.js';
import type { MigrationStateCell, MigrationStatus } from './state.js';
import type { DirtyBitmap } from '../guest/dirty-bitmap.js';
import { discardPayloads, packagedState, PageRequests, postcopyAdvice, readPostcopyMessage } from './postcopy/outgoing.js';

/** BUFFER_DELAY: the rate-limit window. */
const WINDOW_MS = 100;
/** MAX_WAIT: ram_save_iterate() ends a section after this long. */
const MAX_ITERATE_MS = 50;
/** Longest stretch of work between two turns of the event loop. */
const SLICE_MS = 3;
/** How long the page thread runs before it reports (the statistics QMP sees move at this pace). */
const THREAD_SLICE_MS = 10;
/** Hand the writer's bytes to the channel once this much has piled up. */
const FLUSH_BYTES = 1 << 20;
/** Pages saved between looks at the page requests and the stop condition (a divisor of 64). */
const PAGE_RUN = 16;

/** What a COLO primary shares with the daemon (failover state, statistics, test hooks). */
export interface ColoContext {
  failover: Failover;
  stats: ColoStats;
  digest: boolean;
  crashAt: () => CrashPoint | undefined;
  /** COLO_EXIT {mode: primary, reason}. */
  announceExit: (reason: 'request' | 'error') => void;
}

export interface OutgoingEnv {
  guest: Guest;
  colo: ColoContext;
  machine: string;
  /** The migration object's properties (send-switchover-start, multifd-flush-after-each-section). */
  globals: MigrationGlobals;
  caps: Capabilities;
  params: () => MigrationParameters;
  state: MigrationStateCell;
  /**
   * --page-thread on: the page thread booted for this migration (MigrationService boots the next
   * as it is taken), for a migration over a socket or pipe whose pages it can send.
   */
  takePageThread?: () => Promise<PageThread | undefined>;
  /** MIGRATION_PASS, already gated by the events capability. */
  announcePass: (pass: number) => void;
  log: Logger;
}

export class OutgoingMigration {
  readonly startTime = Date.now();
  setupTime = 0;
  totalTime = 0;
  downtime = 0;
  expectedDowntime: number;
  mbps = 0;
  pagesPerSecond = 0;
  /** The error query-migrate shows as error-desc. */
  error?: string;
  /** Why postcopy paused (10.0 shows it as error-desc until a resume). */
  pauseError?: string;
  ram?: RamSaver;

  private channel?: OutgoingChannel;
  private readonly writer = new StreamWriter();
  private thresholdSize = 0;
  /** The rate-limit window: when it began, totalBytes and rateBytes then, and the pages saved. */
  private window = { start: 0, bytes: 0, rateBytes: 0, pages: 0 };
  private unlimited = false;
  private downtimeStart = 0;
  private vmWasRunning = false;
  private abortConnect?: () => void;
  private releasePause?: () => void;
  private wakeSleep?: () => void;
  private returnPath?: Promise<void>;
  /** The return path failed (mark_source_rp_bad()): the migration fails at completion. */
  private rpBad = false;
  /** SWITCHOVER_ACK came on the return path (switchover-ack, 8.1+). */
  private switchoverAcked = false;
  /** The COLO primary, while this migration is in state colo. */
  coloPrimary?: ColoPrimary;
  /** A checkpoint asked for in state colo before the primary's loop existed. */
  private checkpointRequested = false;
  private coloReleased?: () => void;
  private wasColo = false;
  /** The multifd channels, with the multifd capability. */
  multifd?: MultifdSender;
  /** mapped-ram's pages and bitmap in the file (file: only). */
  private mapped?: MappedRamWriter;
  /** mapped-ram with multifd: the pages' bytes, which QEMU's channels would have written. */
  private mappedChannelBytes = 0;
  /** The page thread, given this migration in setup (page-thread.ts): the pages go from here where there is none. */
  private pageThread?: PageThread;
  /** The page thread has taken the pages (from then on it sends them all). */
  private pagesOnThread = false;
  /** Pages the page thread took from the bitmap, so far. */
  private threadPages = 0;
  /** migrate-start-postcopy came: the next iteration switches to postcopy (start_postcopy). */
  private postcopyAsked = false;
  /** In postcopy: the destination's page requests, sent ahead of the background pass. */
  requests?: PageRequests;
  /** The destination said SHUT: it has the whole stream. */
  private shutReceived = false;
  /** A paused postcopy waits here for `migrate resume` (a URI) or a cancel (undefined). */
  private resumeWith?: (uri: MigrationUri | undefined) => void;
  /** postcopy-preempt's channel, where the pages the destination asks for go. */
  private preempt?: { channel: OutgoingChannel; writer: StreamWriter; cursor: { blockSent: boolean }; thread?: PageThread };
  private uri?: MigrationUri;
  /** The recovery handshake waits here for the return path's answer (undefined: it ended). */
  private rpAnswer?: (answer: DirtyBitmap | 'resume-ack' | undefined) => void;

  constructor(private readonly env: OutgoingEnv) {
    this.expectedDowntime = Number(env.params()['downtime-limit']);
  }

  get status(): MigrationStatus {
    return this.env.state.status;
  }

  /** Connects and runs; every failure ends in a state, never in a rejected promise. */
  async run(uri: MigrationUri): Promise<void> {
    this.uri = uri;
    try {
      this.channel = await OutgoingChannel.connect(uri, (abort) => (this.abortConnect = abort));
      this.channel.markFaultable();
      // Faults at a stream point learn their byte as the record is put (src/faults).
      this.writer.onRecord = (kind, name) => faults.any && faults.point('send', kind, name, this.writer.written);
    } catch (err) {
      this.abortConnect = undefined;
      // migrate_fd_error(): setup → failed; a cancel during connect ends as cancelled instead.
      if (this.env.state.change('setup', 'failed')) this.error = (err as Error).message;
      return this.finish();
    }
    this.abortConnect = undefined;
    // multifd with mapped-ram writes the same file from several threads; here one writer does.
    if (this.env.caps.multifd && !capability(this.env.caps, 'mapped-ram') && this.status === 'setup') {
      try {
        this.multifd = await MultifdSender.open(uri, this.env.params()['multifd-channels'], this.env.guest.ram, (sent) => {
          if (!this.ram) return;
          this.countMultifd(sent.bytes);
          this.ram.counters.normal += sent.normal;
          this.ram.counters.duplicate += sent.zero;
        });
      } catch (err) {
        if (this.env.state.change('setup', 'failed')) this.error = (err as Error).message;
        this.channel.shutdown();
        return this.finish();
      }
    }
    if (this.preemptFrom('with-migration') && this.status === 'setup' && !(await this.openPreempt())) {
      if (this.env.state.change('setup', 'failed')) this.error = 'postcopy preempt: the second channel did not connect';
      this.channel.shutdown();
      return this.finish();
    }
    if (this.status === 'cancelling') {
      this.shutdownChannels();
      return this.finish();
    }
    try {
      await this.thread();
      if (this.status === 'colo') await this.runColo(uri);
    } catch (err) {
      this.env.log.error({ err }, 'migration failed unexpectedly');
      this.fail(`qmigd internal error: ${(err as Error).message}`, this.status);
    }
    return this.finish();
  }

  /**
   * migrate_start_colo_process(): checkpoints until COLO ends, then COLO_EXIT, then wait for
   * x-colo-lost-heartbeat (failoverPrimary) before the guest goes on alone.
   */
  private async runColo(uri: MigrationUri): Promise<void> {
    const { env } = this;
    const input = new StreamReader(this.channel!.input!);
    const secondaryOutput = await this.openCompare(uri);
    const primary = new ColoPrimary({
      guest: env.guest,
      failover: env.colo.failover,
      delayMs: () => env.params()['x-checkpoint-delay'],
      stats: env.colo.stats,
      log: env.log,
      digest: env.colo.digest,
      crashAt: env.colo.crashAt,
      stillColo: () => this.status === 'colo',
      secondaryOutput,
      link: {
        input,
        send: async (bytes) => {
          this.writer.bytes(bytes);
          await this.flush();
          if (this.channel!.error) throw new Error(this.channel!.error);
        },
        saveLiveRam: (halfway) => this.saveLiveRam(halfway),
        deviceState: () => {
          const w = new StreamWriter();
          writeDeviceState(w, { cpuTicksOffset: 0n, cpuClockOffset: 0n }, 'running', false);
          return Buffer.concat(w.take().pieces);
        },
      },
    });
    this.coloPrimary = primary;
    if (this.checkpointRequested) primary.notify();
    const released = new Promise<void>((r) => (this.coloReleased = r));
    const before = this.threadPages;
    const reason = await primary.run();
    // The checkpoints are over: the page thread's duplicate of the channel's descriptor would hold
    // the connection open past a failover or a cancel, and the secondary would not see it end.
    this.closePageThread();
    env.log.info({ checkpoints: env.colo.stats.checkpoints, pagesFromPageThread: this.threadPages - before }, 'COLO checkpoints over');
    env.colo.announceExit(reason);
    await released;
    this.coloPrimary = undefined;
    this.vmWasRunning = true;
    this.wasColo = true;
  }

  /** colo-compare's way to the secondary's output: a second connection, where there can be one. */
  private async openCompare(uri: MigrationUri): Promise<Readable | undefined> {
    if (uri.kind !== 'tcp' && uri.kind !== 'unix') return undefined;
    try {
      const channel = await OutgoingChannel.connect(uri, () => undefined);
      await channel.write([be32(COMPARE_MAGIC)]);
      faults.channelOpened(COMPARE_END, channel.breakable);
      return channel.input;
    } catch (err) {
      this.env.log.warn({ err: (err as Error).message }, 'COLO: no compare channel; checkpoints by timer only');
      return undefined;
    }
  }

  /**
   * colo_checkpoint_notify(): a checkpoint soon. In 7.2 the COLO state is announced after the
   * checkpoint machinery exists, so a request right after it is never lost; here the primary
   * starts a moment later (the compare channel connects first), and keeps what came before.
   */
  requestCheckpoint(): void {
    if (this.status !== 'colo') return;
    if (this.coloPrimary) this.coloPrimary.notify();
    else this.checkpointRequested = true;
  }

  /** primary_vm_do_failover(): the primary goes on alone; its migration ends completed. */
  failoverPrimary(): void {
    this.env.state.change('colo', 'completed');
    this.shutdownChannels('COLO failover');
    this.coloPrimary?.notify();
    this.env.colo.failover.change('active', 'completed');
    this.coloReleased?.();
  }

  /** qemu_savevm_live_state(): RAM dirtied since the last checkpoint, as an END section, then EOF. */
  private async saveLiveRam(halfway?: () => void): Promise<number> {
    const w = this.writer;
    const ram = this.ram!;
    const before = w.written;
    if (this.env.globals['send-switchover-start']) writeCommand(w, Command.SWITCHOVER_START);
    writeSectionPart(w, Section.END, sectionIds().ram);
    ram.sync();
    if (halfway) {
      // Half the pages (or all of them, for a handful), then the hook, before the section ends.
      await this.sendPages(() => !this.channel!.usable, Math.floor(ram.dirtyPages / 2));
      await this.flush();
      halfway();
    }
    await this.sendPages(() => !this.channel!.usable);
    await this.endRamSection(false);
    writeEof(w);
    await this.flush();
    if (this.channel!.error) throw new Error(this.channel!.error);
    return w.written - before;
  }

  /** migrate_fd_cancel() */
  cancel(): void {
    const state = this.env.state;
    const s = state.status;
    if (s === 'pre-switchover') {
      state.change(s, 'cancelling');
      this.releasePause?.();
    } else if (s === 'colo') {
      // Not a running state, so no cancelling; but the return path is shut down in every state,
      // and in COLO that is the secondary's voice: the checkpoint loop ends in error (7.2).
      this.shutdownChannels('Channel was shut down: migrate_cancel');
    } else if (s === 'cancelling' || CANCELLABLE.has(s)) {
      state.change(s, 'cancelling'); // a second cancel announces cancelling again, as 7.2
      this.abortConnect?.();
      this.shutdownChannels('Channel was shut down: migration cancelled');
      // 7.2's cancel does not wake a paused postcopy: it stays in cancelling (profile postcopy.cancel).
      if (activeProfile().postcopy.cancel !== 'stuck-when-paused') this.resumeWith?.(undefined);
    }
    this.wakeSleep?.();
  }

  /**
   * yank: the channel is shut down under the migration, which then fails as its next write
   * does (QEMU's qio_channel_shutdown(); the write error is EPIPE).
   */
  yank(): void {
    this.abortConnect?.();
    this.shutdownChannels('Unable to write to socket: Broken pipe');
    this.wakeSleep?.();
  }

  /** The main channel and any multifd or preempt channels, shut with the same reason. */
  private shutdownChannels(reason?: string): void {
    this.channel?.shutdown(reason);
    this.preempt?.channel.shutdown(reason);
    this.multifd?.shutdown(reason);
    this.pageThread?.shutdown();
  }

  /** migrate-continue: lets a migration paused in pre-switchover go on. */
  continue(): void {
    this.releasePause?.();
  }

  private async thread(): Promise<void> {
    const { env, writer } = this;
    const setupStart = Date.now();
    writeHeader(writer, env.machine, this.validatedCaps);
    // Postcopy needs the way back for the destination's page requests.
    if (env.caps['return-path'] || env.caps['postcopy-ram']) {
      writeCommand(writer, Command.OPEN_RETURN_PATH);
      // With x-colo the way back carries COLO's messages from the start, so no PING/PONG there.
      if (!env.caps['x-colo']) {
        writeCommand(writer, Command.PING, be32(1));
        this.returnPath = this.readReturnPath(this.channel!);
      }
    }
    if (env.caps['postcopy-ram']) writeCommand(writer, Command.POSTCOPY_ADVISE, postcopyAdvice());
    if (env.caps['x-colo']) writeCommand(writer, Command.ENABLE_COLO);
    try {
      this.ram = this.ramSaver();
      if (this.multifd?.greetingBytes) {
        this.multifd.bytes += this.multifd.greetingBytes;
        this.countMultifd(this.multifd.greetingBytes);
      }
    } catch (err) {
      if (!(err instanceof PageCacheAllocationError)) throw err;
      // xbzrle_init() reports it; the migration goes active and fails with no error-desc (7.2).
      env.log.error(err.message);
      env.state.change('setup', 'active');
      return this.fail(undefined, 'active');
    }
    writeSectionStart(writer, Section.START, sectionIds().ram, 'ram', 0, RAM_SECTION_VERSION);
    if (this.mapped) {
      // The header holds file offsets: the stream must be where it will be written first.
      const file = this.channel!.file!;
      await this.flush();
      await this.channel!.drained();
      const base = file.position() - writer.written;
      let resume = 0;
      this.ram.setup(writer, (w) => (resume = this.mapped!.header(w, base + w.written)));
      await this.flush();
      await this.channel!.drained();
      file.seek(resume);
    } else this.ram.setup(writer);
    if (this.multifd && this.syncPerRound) {
      // ram_save_setup(): 8.1+ syncs the channels once before the first pass.
      await this.multifd.sync();
      writer.be64(RamFlag.MULTIFD_FLUSH);
    }
    await this.endRamSection(false);
    await this.flush();
    // The page thread, before the first pass (as QEMU's migration thread is), so that every page
    // goes from it; it booted before the migration, so only one that came at once waits for it.
    // With postcopy it serves the background pass too, until a pause (postcopyPause() closes it);
    // with COLO the checkpoints too (runColo() closes it as they end). Not under a channel fault
    // (the bytes must pass this thread's hooks).
    const takePageThread = env.takePageThread;
    if (takePageThread && this.ram.threadable && !faults.channelArmed) {
      await this.attachPageThread(takePageThread());
    }
    this.setupTime = Date.now() - setupStart;
    env.state.change('setup', 'active');
    this.window = { start: Date.now(), bytes: this.totalBytes, rateBytes: this.rateBytes, pages: 0 };

    while (this.iterating) {
      if (!this.rateLimited() || this.requests?.waiting) {
        if ((await this.iterationStep()) === 'done') break;
      }
      const error = this.channel!.writeError ?? this.multifd?.error ?? this.preempt?.channel.writeError;
      if (error && this.status === 'active') {
        this.fail(error, 'active');
        break;
      }
      // postcopy_pause(): the destination runs the guest, so the migration waits to be resumed.
      if (error && this.status === 'postcopy-active') {
        this.pauseError ??= error;
        if (!(await this.postcopyPause())) break;
        continue;
      }
      this.updateCounters(Date.now());
      if (this.rateLimited() && this.iterating && this.channel!.usable && !this.requests?.waiting) await this.sleepToWindowEnd();
    }
  }

  /** Gives the page thread this migration; where it cannot write the channel, it is closed. */
  private async attachPageThread(booted: Promise<PageThread | undefined>): Promise<void> {
    const thread = await booted;
    // With multifd XBZRLE has no part: the pages go to the channels (ram_save_target_page()).
    const xbzrleCacheSize = this.multifd ? undefined : this.ram!.xbzrleCacheSize;
    const pages = { xbzrleCacheSize, multifd: this.multifd, syncPerRound: this.syncPerRound, mapped: this.mapped };
    if (thread?.attach(this.channel!, this.ram!.bitmap, pages)) this.pageThread = thread;
    else thread?.close();
  }

  /** How many pages went from the page thread, and how many from this one, so far (for the log). */
  private get pagesByThread(): { pagesFromPageThread: number; pagesFromQmpThread: number } {
    return { pagesFromPageThread: this.threadPages, pagesFromQmpThread: (this.ram?.pagesSaved ?? 0) - this.threadPages };
  }

  /** The page thread's part ends (the pages go from here from now on); it closes its descriptor. */
  private closePageThread(): void {
    this.pageThread?.close();
    this.pageThread = undefined;
  }

  /** The states migration_thread() iterates in. */
  private get iterating(): boolean {
    return this.status === 'active' || this.status === 'postcopy-active';
  }

  /** The capabilities the configuration section names, those of them that are on. */
  private get validatedCaps(): string[] {
    return activeProfile().stream.validatedCapabilities.filter((c) => capability(this.env.caps, c));
  }

  /** ram_save_setup()'s state: the dirty bitmap, and the XBZRLE cache with that capability. */
  private ramSaver(): RamSaver {
    const { env } = this;
    const file = this.channel!.file;
    if (capability(env.caps, 'mapped-ram') && file) {
      // As ram.c counts them: with multifd the channels write the pages (multifd-bytes, not
      // precopy- or downtime-bytes); without, save_normal_page() on the main channel does. The
      // bitmap is the main channel's, and ram_save_file_bmap() adds it to the RAM bytes too.
      const byChannels = env.caps.multifd === true;
      this.mapped = new MappedRamWriter(file, env.guest.ram.size, (n, what) => {
        if (what === 'page' && byChannels) {
          this.mappedChannelBytes += n;
          return this.countMultifd(n);
        }
        this.writer.written += n;
        this.ram!.sent(n);
      });
    }
    return new RamSaver(env.guest.ram, {
      mapped: this.mapped,
      xbzrle: env.caps.xbzrle,
      autoConverge: env.caps['auto-converge'],
      params: env.params,
      guestRunning: () => env.guest.runState.running,
      syncDirtyLog: () => env.guest.workload.advance(),
      onPass: env.announcePass,
      onThrottle: (pct) => {
        env.guest.workload.throttlePercent = pct;
        env.log.info({ throttle: pct }, 'auto-converge: guest CPU throttled');
      },
      throttlePercent: () => env.guest.workload.throttlePercent,
      transferred: () => this.transferred,
      multifd: this.multifd,
      // 8.1+: the channels sync at every pass over RAM, announced by a MULTIFD_FLUSH record.
      onRoundEnd: this.multifd && this.syncPerRound
        ? (w) => {
            this.multifd!.syncNow();
            w.be64(RamFlag.MULTIFD_FLUSH);
          }
        : undefined,
    });
  }

  /**
   * Whether multifd syncs once per pass over RAM (8.1+ with multifd-flush-after-each-section
   * off) rather than at every RAM EOS (7.2, and old machine types' compat).
   */
  private get syncPerRound(): boolean {
    return !this.env.globals['multifd-flush-after-each-section'];
  }

  /** migration_iteration_run(): another pass, or completion. */
  private async iterationStep(): Promise<'more' | 'done'> {
    const pending = this.ram!.pending(this.thresholdSize);
    if ((pending && pending >= this.thresholdSize) || !this.canSwitchover()) {
      // RAM is all postcopiable: nothing must go before the switch, so it comes at once.
      if (this.postcopyAsked && this.status === 'active') await this.postcopyStart();
      else await this.iterate();
      return 'more';
    }
    if (this.status === 'postcopy-active') return this.completePostcopy();
    await this.complete();
    return 'done';
  }

  /**
   * migration_can_switchover(): with switchover-ack, not before the destination said so (while
   * the guest runs; a stopped guest has nothing to wait for). Until then the passes go on.
   */
  private canSwitchover(): boolean {
    if (!capability(this.env.caps, 'switchover-ack') || !this.env.guest.runState.running) return true;
    return this.switchoverAcked;
  }

  /** ram_save_iterate(): one PART section, until the budget, the bitmap or 50 ms runs out. */
  private async iterate(): Promise<void> {
    const w = this.writer;
    writeSectionPart(w, Section.PART, sectionIds().ram);
    const start = performance.now();
    const status = this.status;
    await this.sendPages(() => this.rateLimited() || performance.now() - start > MAX_ITERATE_MS || this.status !== status);
    // ram_save_iterate() flushes after its EOS; savevm's footer then waits in the buffer for the
    // next flush (the next section, or the switchover), so a pause or a rate-limit sleep sees
    // the stream without it, and 8.1+'s transferred (the bytes flushed) does not count it yet.
    await this.endRamSection(true, () => this.flush());
    // However little there was to send, the event loop gets its turn: QMP, the workload, timers.
    await yieldToLoop();
  }

  /**
   * EOS and the footer of a RAM section; with multifd in 7.2 the channels are synced first
   * (multifd_send_sync_main). Only an iteration's EOS counts as transferred, as in 7.2.
   * `beforeFooter` runs between the EOS and the footer.
   */
  private async endRamSection(iteration: boolean, beforeFooter?: () => Promise<void>): Promise<void> {
    if (this.multifd && !this.syncPerRound) await this.multifd.sync();
    this.mapped?.flush();
    if (iteration) this.ram!.endIteration(this.writer);
    else this.writer.be64(RamFlag.EOS);
    await beforeFooter?.();
    writeFooter(this.writer, sectionIds().ram);
  }

  /** multifd_send_pages(): bytes on the channels count as transferred and as multifd-bytes (not precopy-bytes, as 7.2). */
  private countMultifd(bytes: number): void {
    this.ram!.counters.transferred += bytes;
    this.ram!.counters.multifdBytes += bytes;
  }

  /**
   * Sends dirty pages until `leave` of them are left (by default none) or `stop()` says so,
   * yielding every few ms.
   */
  private async sendPages(stop: () => boolean, leave = 0): Promise<void> {
    // The page thread sends them where it has this migration, unless this side's XBZRLE cache was
    // used meanwhile (RamSaver.threadable), or a channel fault was armed since (its bytes must
    // pass this thread's hooks).
    const thread = this.pageThread;
    if (thread && this.ram!.threadable && !faults.channelArmed) {
      if (!this.pagesOnThread) this.env.log.info('pages go from the page thread from here on');
      this.pagesOnThread = true;
      return this.sendPagesOnThread(thread, stop, leave);
    }
    if (leave) {
      const until = stop;
      stop = () => this.ram!.dirtyPages <= leave || until();
    }
    const w = this.writer;
    const requests = this.requests;
    let slice = performance.now();
    // Runs of PAGE_RUN pages (RamSaver.saveRun()) between looks at the page requests and at
    // `stop`: with a look per page this large function was the hot code, which V8 compiled during
    // the migration, and again. 1 GiB pre-allocated, alternating runs (medians of 7): 874 → 806 ms.
    for (let n = PAGE_RUN, first = true; ; n += PAGE_RUN, first = false) {
      if (requests?.waiting) await this.sendRequested(requests);
      if (!first && stop()) return;
      if (this.ram!.saveRun(w, PAGE_RUN) < PAGE_RUN) return;
      if ((n & 127) === 0 && this.multifd) await this.multifd.send();
      if ((n & 63) === 0 && (w.pending >= FLUSH_BYTES || performance.now() - slice > SLICE_MS)) {
        await this.flush();
        await yieldToLoop();
        slice = performance.now();
        if (!this.channel!.usable) return;
      }
    }
  }

  /** The pages asked for, now: on the preempt channel where there is one (a vCPU waits for them). */
  private async sendRequested(requests: PageRequests): Promise<void> {
    const preempt = this.preempt;
    const w = preempt?.writer ?? this.writer;
    for (let page = requests.next(); page !== undefined; page = requests.next()) this.ram!.saveRequested(w, page, preempt?.cursor);
    if (!preempt) return this.flush();
    await preempt.channel.write(w.take().pieces);
  }

  /**
   * Whether the page thread can send the pages asked for: on the main channel, or on the preempt
   * channel once it has its own duplicate of it (given here the first time, after what this side
   * wrote there is on the wire).
   */
  private async requestsOnThread(thread: PageThread): Promise<boolean> {
    const preempt = this.preempt;
    if (!preempt || preempt.thread === thread) return true;
    await preempt.channel.drained();
    if (!preempt.channel.usable || !thread.attachPreempt(preempt.channel)) return false;
    preempt.thread = thread;
    return true;
  }

  /** Whether postcopy-preempt is on and its channel connects at this moment (x-preempt-pre-7-2). */
  private preemptFrom(moment: 'with-migration' | 'at-switch'): boolean {
    return capability(this.env.caps, 'postcopy-preempt') && this.env.globals['x-preempt-pre-7-2'] === (moment === 'with-migration');
  }

  /** Connects postcopy-preempt's channel to the migration's address; false if it cannot. */
  private async openPreempt(uri = this.uri!): Promise<boolean> {
    try {
      const channel = await OutgoingChannel.connect(uri, (abort) => (this.abortConnect = abort));
      channel.markFaultable({ channel: 'postcopy-preempt', side: 'send' });
      this.preempt = { channel, writer: new StreamWriter(), cursor: { blockSent: false } };
      return true;
    } catch (err) {
      this.env.log.error(`postcopy preempt: ${(err as Error).message}`);
      return false;
    } finally {
      this.abortConnect = undefined;
    }
  }

  /**
   * sendPages() on the page thread, in slices; `stop()` is asked between them. In postcopy a
   * slice ends as a page request comes, and the next one sends the pages asked for first, as
   * the loop above serves them between its runs (from here where the thread cannot have the
   * preempt channel).
   */
  private async sendPagesOnThread(thread: PageThread, stop: () => boolean, leave: number): Promise<void> {
    const requests = this.requests;
    // The thread writes through its own descriptor: what this side put must be on the wire first.
    await this.flush();
    await this.channel!.drained();
    if (!this.channel!.usable) return;
    const detection = this.env.params()['zero-page-detection'] ?? 'legacy';
    // At least one slice, as the loop above sends at least one run: ram_save_iterate() looks at
    // the clock only after its first page, so every iteration sends something.
    do {
      const onThread = requests?.waiting && (await this.requestsOnThread(thread));
      if (requests?.waiting && !onThread) {
        await this.sendRequested(requests);
        await this.channel!.drained();
        if (!this.channel!.usable) return;
      }
      const pages = leave ? this.ram!.dirtyPages - leave : undefined;
      const preempt = this.preempt;
      // On a file the thread writes where this side's writes end, and this side goes on after it.
      const file = this.channel!.file;
      const filePos = file?.position();
      const r = await thread.slice({
        ...this.ram!.position, budget: this.budgetLeft(), ms: THREAD_SLICE_MS, pages, detection,
        packets: requests ? undefined : this.multifd?.cursor, interrupt: requests?.waitingFlag,
        requested: onThread ? requests!.takeAll() : undefined, preempt: onThread && preempt ? preempt.cursor : undefined, filePos,
      });
      if (filePos !== undefined) file!.seek(filePos + r.bytes);
      this.writer.written += r.bytes;
      this.threadPages += r.pages;
      this.ram!.absorb(r);
      if (r.preempt) {
        preempt!.cursor.blockSent = r.preempt.blockSent;
        this.ram!.sent(r.preempt.bytes);
        if (r.preempt.error) preempt!.channel.fail(r.preempt.error);
      }
      if (r.mappedBytes) this.mapped!.countPages(r.mappedBytes);
      if (r.packets) this.multifd!.absorb(r.packets);
      if (r.error) this.channel!.fail(r.error);
      if (r.exhausted) return;
    } while (this.channel!.usable && !stop() && (leave === 0 || this.ram!.dirtyPages > leave));
  }

  /** migration_completion(): stop the guest, maybe pause, send the rest and the device state. */
  private async complete(): Promise<void> {
    const { env } = this;
    const guest = env.guest;
    let current: MigrationStatus = 'active';
    this.downtimeStart = Date.now();
    this.vmWasRunning = guest.runState.running;
    const globalState = guest.runState.state; // global_state_store()
    if (!guest.runState.stop('finish-migrate')) guest.runState.set('finish-migrate');

    if (env.caps['pause-before-switchover']) {
      // migration_maybe_pause(); a cancel that came first skips the wait.
      if (this.status !== 'cancelling') {
        env.state.change(current, 'pre-switchover');
        await new Promise<void>((r) => (this.releasePause = r));
        this.releasePause = undefined;
        env.state.change('pre-switchover', 'device');
        current = 'device';
      }
      if (this.status !== 'device') return this.fail(undefined, current);
    } else if (activeProfile().precopy.deviceWithoutPause) {
      if (this.status !== 'active') return this.fail(undefined, current);
      env.state.change('active', 'device');
      current = 'device';
    }

    this.unlimited = true;
    // migration_switchover_start(): after any pause, before the last of RAM and the devices.
    const w = this.writer;
    if (env.globals['send-switchover-start']) writeCommand(w, Command.SWITCHOVER_START);
    // In COLO the XBZRLE cache must keep following what was sent: this is not the last stage.
    if (!env.caps['x-colo']) this.ram!.enterLastStage();
    writeSectionPart(w, Section.END, sectionIds().ram);
    this.ram!.sync();
    await this.sendPages(() => !this.channel!.usable);
    this.mapped?.writeBitmap();
    await this.endRamSection(false);
    writeDeviceState(w, { cpuTicksOffset: 0n, cpuClockOffset: 0n }, globalState, true, env.machine, this.validatedCaps);
    await this.flush();
    await this.channel!.drained();
    await this.channel!.file?.settled();
    await this.multifd?.drained();
    // COLO starts where a migration would complete, from the one state the release allows. Its
    // checkpoints are taken here, their pages from the page thread too (runColo() closes it).
    if (env.caps['x-colo'] && current === activeProfile().precopy.coloFrom && !this.channel!.error) {
      env.state.change(current, 'colo');
      return;
    }
    if (this.channel!.usable && !this.returnPath) this.channel!.end();
    this.multifd?.end();
    if (this.returnPath) await this.returnPath;
    const error = this.channel!.error ?? this.multifd?.error;
    if (error !== undefined || this.rpBad) return this.fail(activeProfile().precopy.completionErrorReported ? error : undefined, current);
    env.state.change(current, 'completed');
  }

  /** migrate-start-postcopy: the switch comes at the next iteration (while pre-copy goes on). */
  startPostcopy(): void {
    this.postcopyAsked = true;
  }

  /**
   * postcopy_start(): the guest stops here for good; the pages still dirty are discarded on the
   * destination, which gets the devices in a package that ends with RUN and runs the guest, and
   * asks for what it touches before the background pass brings it.
   */
  private async postcopyStart(): Promise<void> {
    const { env, writer: w } = this;
    const guest = env.guest;
    // The page thread sends the background pass too; the pages asked for go from here.
    if (this.preemptFrom('at-switch') && !(await this.openPreempt())) return this.fail('postcopy_start: Failed to establish preempt channel', 'active');
    // 7.2 announces postcopy-active, then stops the guest; 10.0 stops it, then announces device.
    const via = activeProfile().postcopy.switchoverState;
    if (via === 'postcopy-active') env.state.change('active', via);
    this.downtimeStart = Date.now();
    const globalState = guest.runState.state; // global_state_store()
    if (!guest.runState.stop('finish-migrate')) guest.runState.set('finish-migrate');
    if (via === 'device') env.state.change('active', via);
    if (env.caps['pause-before-switchover']) {
      // migration_maybe_pause(), back to where it was; a cancel meanwhile ends it.
      env.state.change(via, 'pre-switchover');
      await new Promise<void>((r) => (this.releasePause = r));
      this.releasePause = undefined;
      if (!env.state.change('pre-switchover', via)) return;
    }
    if (env.globals['send-switchover-start']) writeCommand(w, Command.SWITCHOVER_START);
    const ram = this.ram!;
    ram.sync();
    for (const payload of discardPayloads(ram.bitmap, guest.ram.id)) writeCommand(w, Command.POSTCOPY_RAM_DISCARD, payload);
    ram.enterPostcopy();
    this.requests = new PageRequests(guest.ram);
    env.log.info(this.pagesByThread, 'postcopy: the switch');
    writeCommand(w, Command.PING, be32(2));
    const base = w.written + 9; // the package follows its command: u8, be16, be16, be32
    const pkg = packagedState(globalState, (kind, name, at) => faults.any && faults.point('send', kind, name, base + at));
    writeCommand(w, Command.PACKAGED, be32(pkg.length));
    w.bytes(pkg);
    writeCommand(w, Command.PING, be32(4));
    await this.flush();
    if (via !== 'postcopy-active') env.state.change(via, 'postcopy-active');
    // 7.2: the guest's downtime ends as the destination gets the devices (profile postcopy.downtime).
    if (activeProfile().postcopy.downtime === 'at-switch') this.downtime = Date.now() - this.downtimeStart;
    this.window = { start: Date.now(), bytes: this.totalBytes, rateBytes: this.rateBytes, pages: ram.pagesSaved };
  }

  /**
   * migration_completion() in postcopy: the last pages in an END section, EOF (no VM
   * description), then the destination's SHUT. 'more' when the channel broke first and the
   * migration was resumed: what the destination lacks is sent again.
   */
  private async completePostcopy(): Promise<'more' | 'done'> {
    const w = this.writer;
    writeSectionPart(w, Section.END, sectionIds().ram);
    await this.sendPages(() => !this.channel!.usable);
    await this.endRamSection(false);
    writeEof(w);
    await this.flush();
    await this.channel!.drained();
    const preempt = this.preempt;
    if (preempt) {
      // 7.2's layout ends the preempt channel with an EOS (postcopy_preempt_shutdown_file()).
      if (this.env.globals['x-preempt-pre-7-2']) preempt.writer.be64(RamFlag.EOS);
      await preempt.channel.write(preempt.writer.take().pieces);
      await preempt.channel.drained();
    }
    await this.returnPath;
    if (this.shutReceived && !this.rpBad) {
      preempt?.channel.end();
      this.env.state.change('postcopy-active', 'completed');
      return 'done';
    }
    if (this.rpBad || this.status !== 'postcopy-active') {
      this.fail(undefined, 'postcopy-active');
      return 'done';
    }
    return (await this.postcopyPause()) ? 'more' : 'done';
  }

  /** migrate-pause on the source: its channel is shut down, and the migration pauses. */
  pause(): void {
    this.pauseError ??= 'Postcopy migration is paused by the user';
    this.channel?.shutdown();
    this.pageThread?.shutdown();
    this.wakeSleep?.();
  }

  /** migrate with resume: the paused migration recovers over a new connection to `uri`. */
  resume(uri: MigrationUri): void {
    this.pauseError = undefined;
    if (activeProfile().postcopy.resumeSetupState) this.env.state.change('postcopy-paused', 'postcopy-recover-setup');
    this.resumeWith?.(uri);
  }

  /**
   * postcopy_pause(): postcopy-paused until `migrate resume` connects again, then the recovery
   * handshake; a failed recovery pauses again. False when the migration ended (cancel).
   */
  private async postcopyPause(): Promise<boolean> {
    // The page thread ends: its duplicate of the channel's descriptor would hold the connection
    // open, and the destination must see it end. A new one boots during the pause (its start-up
    // falls there) and, after a recovery, sends on the new channel.
    const next = this.pageThread && this.env.takePageThread?.();
    this.closePageThread();
    const recovered = await this.pausedUntilRecovered();
    if (recovered && next) await this.attachPageThread(next);
    else void next?.then((t) => t?.close());
    if (recovered) this.env.log.info(this.pagesByThread, 'postcopy: recovered');
    return recovered;
  }

  /** postcopyPause()'s wait: true once a recovery brought the migration back to postcopy-active. */
  private async pausedUntilRecovered(): Promise<boolean> {
    const { env } = this;
    for (;;) {
      if (this.status !== 'postcopy-paused') env.state.change(this.status, 'postcopy-paused');
      this.channel!.shutdown();
      this.preempt?.channel.shutdown();
      this.preempt = undefined;
      this.writer.take(); // unsent bytes are lost with the channel; the received bitmap says what
      await this.returnPath;
      env.log.error('Detected IO failure for postcopy. Migration paused.'); // as QEMU reports it
      const uri = await new Promise<MigrationUri | undefined>((r) => (this.resumeWith = r));
      this.resumeWith = undefined;
      if (!uri || !RESUMING.has(this.status)) return false;
      if (await this.recover(uri)) return true;
      // Paused again: the connection failed, or the handshake did (then from postcopy-recover).
      if (this.status !== 'postcopy-paused' && this.status !== 'postcopy-recover') return false;
    }
  }

  /**
   * migrate_fd_connect() with resume, then postcopy_do_resume(): the received bitmap of the
   * block (RECV_BITMAP, answered on the return path), which becomes what is left to send, then
   * POSTCOPY_RESUME and its RESUME_ACK. A failed connection leaves the migration paused.
   */
  private async recover(uri: MigrationUri): Promise<boolean> {
    const { env } = this;
    let channel: OutgoingChannel;
    try {
      channel = await OutgoingChannel.connect(uri, (abort) => (this.abortConnect = abort));
    } catch (err) {
      // migrate_fd_error() on a resume: reported; the migration waits for another (9.0+: paused again).
      env.log.error(`postcopy recovery: ${(err as Error).message}`);
      env.state.change('postcopy-recover-setup', 'postcopy-paused');
      return false;
    } finally {
      this.abortConnect = undefined;
    }
    // 7.2's layout connects the preempt channel as the main one does, before postcopy-recover.
    if (this.preemptFrom('with-migration') && !(await this.openPreempt(uri))) {
      channel.shutdown();
      env.state.change('postcopy-recover-setup', 'postcopy-paused');
      return false;
    }
    const from = this.status;
    if (!RESUMING.has(from) || !env.state.change(from, 'postcopy-recover')) {
      channel.shutdown();
      return false;
    }
    this.channel = channel;
    channel.markFaultable();
    this.shutReceived = false;
    this.rpBad = false;
    this.returnPath = this.readReturnPath(channel);
    const answer = (): Promise<DirtyBitmap | 'resume-ack' | undefined> => new Promise((r) => (this.rpAnswer = r));
    const id = Buffer.from(env.guest.ram.id, 'latin1');
    const asked = answer();
    writeCommand(this.writer, Command.RECV_BITMAP, Buffer.concat([Buffer.from([id.length]), id]));
    await this.flush();
    const bitmap = await asked;
    if (typeof bitmap !== 'object') return this.recoveryFailed();
    this.ram!.reloadFromReceived(bitmap);
    // 8.0+'s layout connects it after the bitmap, so the destination sees the main channel first.
    if (this.preemptFrom('at-switch') && !(await this.openPreempt(uri))) return false;
    const acked = answer();
    writeCommand(this.writer, Command.POSTCOPY_RESUME);
    await this.flush();
    if ((await acked) !== 'resume-ack') return this.recoveryFailed();
    return env.state.change('postcopy-recover', 'postcopy-active');
  }

  /**
   * The return path failed during the handshake: 8.2+ pauses again; 7.2's migration thread is
   * never woken, and stays in postcopy-recover (a cancel leaves it in cancelling).
   */
  private async recoveryFailed(): Promise<false> {
    if (activeProfile().postcopy.failedRecovery === 'source-stuck-destination-crashes') await new Promise<never>(() => undefined);
    return false;
  }

  /** migration_iteration_finish() and migrate_fd_cleanup(). */
  private finish(): void {
    const { guest, state, log } = this.env;
    this.closePageThread();
    guest.workload.throttlePercent = 0; // cpu_throttle_stop()
    const end = Date.now();
    if (state.status === 'completed' && this.wasColo) {
      // After COLO the primary runs on; 7.2 skips the completion statistics on this path.
      guest.runState.start();
      this.channel?.shutdown('COLO ended');
    } else if (state.status === 'completed') {
      this.totalTime = end - this.startTime;
      this.downtime = this.completionDowntime(end);
      const transferTime = this.totalTime - this.setupTime;
      if (transferTime) this.mbps = (this.totalBytes * 8) / transferTime / 1000;
      guest.runState.set('postmigrate');
    } else {
      if (this.vmWasRunning) {
        if (guest.runState.state !== 'shutdown') guest.runState.start();
      } else if (guest.runState.state === 'finish-migrate') guest.runState.set('postmigrate');
      this.shutdownChannels();
    }
    state.change('cancelling', 'cancelled');
    if (this.error && state.status === 'failed') log.error(this.error);
    log.info({ status: state.status, transferred: this.transferred, totalMs: end - this.startTime, ...this.pagesByThread }, 'migration finished');
  }

  /** migration_calculate_complete()'s downtime (postcopy: profile postcopy.downtime). */
  private completionDowntime(end: number): number {
    if (!this.requests || activeProfile().postcopy.downtime === 'until-completion') return end - this.downtimeStart;
    // 7.2: measured at the switch; if that was 0 ms, end - a downtime_start never set (0), on QEMU's monotonic clock.
    return this.downtime || Number(process.hrtime.bigint() / 1_000_000n);
  }

  private fail(error: string | undefined, from: MigrationStatus): void {
    // migrate_set_error(): the first error of the migration is the one it shows.
    if (this.env.state.change(from, 'failed') && error) this.error ??= error;
  }

  /**
   * MigrationStats' `transferred`, as the release counts it (profile migration.ramTransferred):
   * the RAM records and multifd's bytes (7.2), or everything on the main channel plus multifd's
   * bytes (8.1+; qemu_fflush() counts what it hands the channel, so bytes still in the writer
   * do not count yet).
   */
  get transferred(): number {
    const c = this.ram?.counters;
    if (!c) return 0;
    return activeProfile().migration.ramTransferred === 'stream' ? this.writer.written - this.writer.pending + c.multifdBytes : c.transferred;
  }

  /** migration_total_bytes(): the main stream and the multifd channels. */
  private get totalBytes(): number {
    return this.writer.written + (this.multifd?.bytes ?? 0) + this.mappedChannelBytes;
  }

  /** What the rate limit counts: totalBytes, and the multifd bytes handed over and not yet counted. */
  private get rateBytes(): number {
    return this.totalBytes + (this.multifd?.uncounted ?? 0);
  }

  /** qemu_file_rate_limit(): the window's budget is spent (0 means unlimited), or the channel died. */
  private rateLimited(): boolean {
    return !this.channel!.usable || this.budgetLeft() < 0;
  }

  /** Bytes the rate-limit window still allows (negative once overspent; Infinity: no limit). */
  private budgetLeft(): number {
    // In postcopy the limit is max-postcopy-bandwidth, whose 0 means none.
    const budget = Number(this.env.params()[this.requests ? 'max-postcopy-bandwidth' : 'max-bandwidth']) / (1000 / WINDOW_MS);
    if (this.unlimited || budget <= 0) return Infinity;
    return budget - (this.rateBytes - this.window.rateBytes);
  }

  /** migration_update_counters(): once per window. */
  private updateCounters(now: number): void {
    const elapsed = now - this.window.start;
    if (elapsed < WINDOW_MS) return;
    const ram = this.ram!;
    const transferred = this.totalBytes - this.window.bytes;
    const bandwidth = transferred / elapsed; // bytes per ms
    this.thresholdSize = bandwidth * Number(this.env.params()['downtime-limit']);
    this.mbps = (transferred * 8) / (elapsed / 1000) / 1000 / 1000;
    this.pagesPerSecond = (ram.pagesSaved - this.window.pages) / (elapsed / 1000);
    if (ram.counters.dirtyPagesRate && transferred > 10000) this.expectedDowntime = ram.remainingBytes / bandwidth;
    this.window = { start: now, bytes: this.totalBytes, rateBytes: this.rateBytes, pages: ram.pagesSaved };
  }

  /** migration_rate_limit(): sleep out the window; a cancel wakes us early. */
  private async sleepToWindowEnd(): Promise<void> {
    const ms = this.window.start + WINDOW_MS - Date.now();
    if (ms <= 0) return;
    await new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      this.wakeSleep = () => {
        clearTimeout(t);
        r();
      };
    });
    this.wakeSleep = undefined;
  }

  private async flush(): Promise<void> {
    const { pieces, retired } = this.writer.take();
    if (pieces.length) await this.channel!.write(pieces, () => this.writer.recycle(retired));
  }

  /**
   * source_return_path_thread(): PONGs, page requests and the recovery's answers in postcopy,
   * and SHUT when the destination is done.
   */
  private async readReturnPath(channel: OutgoingChannel): Promise<void> {
    try {
      await this.readReturnPathMessages(channel);
    } finally {
      this.rpAnswer?.(undefined);
    }
  }

  private async readReturnPathMessages(channel: OutgoingChannel): Promise<void> {
    const input = channel.input;
    if (!input) return;
    const r = new StreamReader(input);
    // As mark_source_rp_bad(): the migration fails when it next looks, at completion; what else
    // follows is the release's (profile stream.rpFailure).
    const bad = (msg: string): void => {
      this.env.log.error(`RP: ${msg}`);
      this.rpBad = true;
      // migrate_set_error() from the thread: the first error of the migration stays.
      if (activeProfile().stream.rpFailure === 'error-desc') this.error ??= msg;
      else channel.closeUnder();
    };
    // The source's end of the return path (src/faults: channel return-path, side receive).
    const end: ChannelEnd = { channel: 'return-path', side: 'receive' };
    faults.channelOpened(end, channel.breakable);
    const take = async (n: number): Promise<Buffer> => {
      await r.need(n);
      const bytes = r.view(n);
      return faults.any ? await readThroughFaults(end, Buffer.from(bytes)) : bytes;
    };
    try {
      for (;;) {
        const head = await take(4);
        const type = head.readUInt16BE(0);
        const len = head.readUInt16BE(2);
        if (type === RpMessage.INVALID || type >= activeProfile().stream.rpMessageMax || len > RP_MAX_LENGTH) {
          return bad(`Received invalid message 0x${hex4(type)} length 0x${hex4(len)}`);
        }
        const payload = await take(len);
        const expect =
          type === RpMessage.SHUT || type === RpMessage.PONG || type === RpMessage.RESUME_ACK ? 4
          : type === RpMessage.REQ_PAGES ? 12
          : type === RpMessage.SWITCHOVER_ACK ? 0
          : -1;
        if (expect >= 0 && len !== expect) {
          return bad(`Received '${RP_NAMES[type]}' message (0x${hex4(type)}) with incorrect length ${len} expecting ${expect}`);
        }
        if (type === RpMessage.SHUT) {
          const status = payload.readUInt32BE(0);
          if (status) bad(`Sibling indicated error ${status}`);
          else this.shutReceived = true;
          return;
        }
        if (type === RpMessage.PONG) continue;
        if (type === RpMessage.SWITCHOVER_ACK) {
          // Taken whether or not this side asked for it, as 10.0's source takes it.
          this.switchoverAcked = true;
          continue;
        }
        if (this.requests) {
          const answer = await readPostcopyMessage(type, payload, take, this.env.guest.ram, this.requests);
          if (answer === 'unexpected') return bad(`Received '${RP_NAMES[type]}' message (0x${hex4(type)}) during postcopy`);
          if ('error' in answer) return bad(answer.error);
          if ('requested' in answer) this.wakeSleep?.();
          else this.rpAnswer?.('bitmap' in answer ? answer.bitmap : 'resume-ack');
          continue;
        }
        return bad(`Received '${RP_NAMES[type]}' message (0x${hex4(type)}) during precopy`);
      }
    } catch (err) {
      // qemu_file_get_error_obj(): the socket's own error, or EIO for an end with none.
      const failure = err instanceof StreamEnded ? err.failure : (err as Error);
      const why = failure ? channel.readError(failure) : 'Channel error: Input/output error';
      // In postcopy a broken way back is a broken channel: the migration pauses (postcopy_pause_return_path_thread()).
      if (POSTCOPY_RUNNING.has(this.status)) {
        this.pauseError ??= why;
        channel.shutdown();
        this.wakeSleep?.();
        return;
      }
      if (err instanceof StreamEnded && !['setup', 'active', 'device', 'pre-switchover'].includes(this.status)) return;
      bad(why);
    }
  }
}

/** A paused postcopy's states until its new connection is there. */
const RESUMING: ReadonlySet<MigrationStatus> = new Set(['postcopy-paused', 'postcopy-recover-setup']);
/** States a postcopy migration can pause from. */
const POSTCOPY_RUNNING: ReadonlySet<MigrationStatus> = new Set(['postcopy-active', 'postcopy-recover']);
/** The states migrate_cancel moves to cancelling (pre-switchover and colo have their own ways). */
const CANCELLABLE: ReadonlySet<MigrationStatus> = new Set([
  'setup', 'active', 'device', 'wait-unplug', 'postcopy-active', 'postcopy-paused', 'postcopy-recover',
]);

const RP_NAMES = ['INVALID', 'SHUT', 'PONG', 'REQ_PAGES_ID', 'REQ_PAGES', 'RECV_BITMAP', 'RESUME_ACK', 'SWITCHOVER_ACK'];

/** A capability by name: switchover-ack is one only some profiles have. */
export function capability(caps: Capabilities, name: string): boolean {
  return (caps as Record<string, boolean | undefined>)[name] === true;
}
const hex4 = (n: number): string => n.toString(16).padStart(4, '0');

function yieldToLoop(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}
