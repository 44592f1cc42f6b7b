/**
 * The daemon's migration state, as QEMU's global MigrationState and MigrationIncomingState:
 * capabilities, parameters, the current (or last) outgoing migration, the incoming one, and the
 * commands' semantics with their checks in QEMU's order (qmp_migrate, migrate_prepare,
 * qmp_migrate_incoming, qmp_migrate_set_capabilities, qmp_migrate_set_parameters, ...).
 */
import type { Logger } from 'pino';
import { Errors, QmpError } from '../errors.js';
import type { MigrationGlobals } from './globals.js';
import type { Guest } from '../guest/guest.js';
import { openOutgoingFile } from './channels/outgoing-channel.js';
import { OwnedFd } from './channels/owned-fd.js';
import { parseChannels, parseMigrationUri, UriError, type MigrationChannelArg, type MigrationUri } from './channels/uri.js';
import { activeProfile } from '../profiles/index.js';
import { bootLoadThread, IncomingMigration } from './incoming.js';
import { capability, OutgoingMigration } from './outgoing.js';
import { Failover } from './colo/failover.js';
import type { CrashPoint } from './colo/primary.js';
import { ColoStats } from './colo/stats.js';
import {
  capabilityNames,
  checkCapabilities,
  checkParameters,
  defaultCapabilities,
  defaultParameters,
  mergeParameters,
  type Capabilities,
  type Capability,
  type MigrationParameters,
} from './params.js';
import { isInPostcopy, isMigrationRunning, MigrationStateCell, type MigrationStatus } from './state.js';
import type { LoadThread } from './ram/load-thread.js';
import { PageThread } from './ram/page-thread.js';

export type ColoMode = 'none' | 'primary' | 'secondary';

/** A URI in QMP's terms: one that does not parse is a channel error, an unknown scheme `unknown`'s. */
function parseUri(uri: string, unknown: (uri: string) => QmpError): MigrationUri {
  let parsed: MigrationUri | undefined;
  try {
    parsed = parseMigrationUri(uri);
  } catch (err) {
    throw Errors.migrationChannel((err as Error).message);
  }
  if (!parsed) throw unknown(uri);
  return parsed;
}

/** Where `migrate` and `migrate-incoming` go: a URI, or (from 8.2) a channel list. */
export interface MigrationTarget {
  uri?: string;
  channels?: MigrationChannelArg[];
  /** migrate-incoming's (8.2 on): false keeps a destination whose load failed running, in failed. */
  'exit-on-error'?: boolean;
}

/** A monitor's named descriptors, as fd: URIs reach them (getfd's names). */
export interface NamedDescriptors {
  /** monitor_get_fd(): the descriptor, which the caller now owns, and the name is gone. */
  take(name: string): number | undefined;
}

export interface MigrationServiceEnv {
  guest: Guest;
  machine: string;
  /** The migration object's properties: the release's, the machine type's compat, -global. */
  globals: MigrationGlobals;
  /** Sends a QMP event (MIGRATION, MIGRATION_PASS). */
  emit: (event: string, data: Record<string, unknown>) => void;
  log: Logger;
  onFatal: (lines: string[]) => void;
  /** Hash RAM at every COLO checkpoint (--colo-checkpoint-digest). */
  coloDigest: boolean;
  /** Fail over by itself this long after losing the COLO peer (--colo-heartbeat-timeout); 0: never. */
  coloHeartbeatTimeoutMs: number;
  /** -sandbox on,spawn=deny: exec: URIs fail as QEMU's fork would under a seccomp filter. */
  spawnDenied: boolean;
  /** --page-thread: outgoing migrations send their pages from a thread of their own (page-thread.ts). */
  pageThread: boolean;
  /**
   * Started as a destination (-incoming, defer too): a load thread boots with it instead of a page
   * thread (its first migration out boots one in setup), so that none adds to the peak of the
   * migration it takes in.
   */
  incomingAtStart: boolean;
  /** Registers the migration with yank while it runs; returns the unregister function. */
  registerYank: (yank: () => void) => () => void;
}

export class MigrationService {
  capabilities: Capabilities = defaultCapabilities();
  parameters: MigrationParameters;
  /** The source side's state (MigrationState.state). */
  readonly outgoingState: MigrationStateCell;
  /** The destination side's state (MigrationIncomingState.state). */
  readonly incomingState: MigrationStateCell;
  outgoing?: OutgoingMigration;
  incoming?: IncomingMigration;
  private incomingStarted = false;
  /** COLO: the failover state machine, this side's statistics, last-mode, and a test hook. */
  readonly failover = new Failover();
  readonly coloStats = new ColoStats();
  private lastColoMode: ColoMode = 'none';
  crashAt?: CrashPoint;
  /** --page-thread on: a page thread booted for the next outgoing migration (page-thread.ts). */
  private bootedPageThread?: Promise<PageThread | undefined>;
  /** --page-thread on, a destination: the load thread booted with the daemon, for migrate-incoming (load-thread.ts). */
  private bootedLoadThread?: Promise<LoadThread | undefined>;
  /** error-desc of a migration that failed before it had an OutgoingMigration. */
  private setupError?: string;
  /** error-desc of an incoming migration that failed without exiting (exit-on-error false). */
  private incomingError?: string;
  /**
   * The named descriptors of the monitor whose command is running (QEMU's monitor_cur()),
   * undefined when no monitor is (-incoming on the command line). Wired by the fds commands.
   */
  monitorFds: () => NamedDescriptors | undefined = () => undefined;

  constructor(private readonly env: MigrationServiceEnv) {
    this.parameters = defaultParameters(env.globals);
    const announce = (status: MigrationStatus): void => {
      if (this.capabilities.events) env.emit('MIGRATION', { status });
    };
    this.outgoingState = new MigrationStateCell(announce);
    this.incomingState = new MigrationStateCell(announce);
    if (!env.incomingAtStart) this.bootPageThread();
    else if (env.pageThread) this.bootedLoadThread = bootLoadThread(env.guest.ram, env.log);
  }

  /**
   * --page-thread on: boots the page thread of the next outgoing migration, unless one is ready.
   * Booted ahead (with the daemon, unless it is a destination, and after each outgoing
   * migration), so that its start-up (a V8 isolate, Node's internals: about 100 ms of CPU) falls
   * in no migration's setup.
   */
  private bootPageThread(): void {
    if (!this.env.pageThread || this.bootedPageThread) return;
    this.bootedPageThread = PageThread.boot(this.env.guest.ram);
    void this.bootedPageThread.then((t) => t && this.env.log.info('page thread ready for the next outgoing migration'));
  }

  /**
   * The load thread booted with a destination daemon, once: booted before migrate-incoming
   * (libvirt sends it after its own set-up of the monitor), its start-up falls before the
   * migration, as a source's page thread's does.
   */
  private takeLoadThread(): Promise<LoadThread | undefined> | undefined {
    const booted = this.bootedLoadThread;
    this.bootedLoadThread = undefined;
    return booted;
  }

  /** The booted page thread, for the migration that takes it (one that gives it back closes it). */
  private takePageThread(): Promise<PageThread | undefined> {
    const booted = this.bootedPageThread ?? PageThread.boot(this.env.guest.ram);
    this.bootedPageThread = undefined;
    return booted;
  }

  get status(): MigrationStatus {
    return this.outgoingState.status;
  }

  /**
   * migration_channel_parse_input() of 8.2 and later: uri or channels (an empty list is no list,
   * as in C), each parsed to the same MigrationUri; a bad one is refused with the state untouched.
   */
  private resolveTarget(target: MigrationTarget, side: 'outgoing' | 'incoming'): MigrationUri {
    const channels = target.channels?.length ? target.channels : undefined;
    if ((target.uri === undefined) === (channels === undefined)) throw Errors.needUriOrChannels();
    try {
      if (channels) return parseChannels(channels, side);
      const parsed = parseMigrationUri(target.uri!);
      if (!parsed) throw side === 'outgoing' ? Errors.invalidMigrationProtocol(target.uri!) : Errors.unknownMigrationProtocol(target.uri!);
      return parsed;
    } catch (err) {
      if (err instanceof UriError) throw Errors.migrationChannel(err.message);
      throw err;
    }
  }

  /**
   * migration_channels_and_transport_compatible(): a capability that writes or reads at fixed
   * offsets (mapped-ram) needs a file; one that opens more connections needs tcp or unix (or a
   * file, which mapped-ram's threads open again). QEMU 10.0 refuses fd: for mapped-ram even on a
   * regular file, as this does (qemu100-mapped-ram.test.ts).
   */
  private checkTransport(parsed: MigrationUri): void {
    const { seekableCapabilities, multiChannelCapabilities } = activeProfile().migration;
    const on = (c: string): boolean => capability(this.capabilities, c);
    if (seekableCapabilities.some(on) && parsed.kind !== 'file') throw Errors.seekableTransport();
    const multiChannel = parsed.kind === 'tcp' || parsed.kind === 'unix' || (parsed.kind === 'file' && on('mapped-ram'));
    if (multiChannelCapabilities.some(on) && !multiChannel) throw Errors.multiChannelTransport();
  }

  /** qmp_migrate(): 7.2 parses the URI after migrate_init(), later releases before migrate_prepare(). */
  migrate(target: MigrationTarget, opts: { blk?: boolean; inc?: boolean; resume?: boolean }): void {
    const early = activeProfile().migration.uriParsedBeforeSetup;
    let parsed: MigrationUri | undefined = early ? this.resolveTarget(target, 'outgoing') : undefined;
    if (parsed) this.checkTransport(parsed);
    // Pages at fixed offsets leave no room for compressed ones (10.0 checks it here, before setup).
    if (capability(this.capabilities, 'mapped-ram') && this.parameters['multifd-compression'] !== 'none') throw Errors.mappedRamCompression();
    const uri = target.uri ?? parsed?.text ?? '';
    if (opts.resume) return this.resume(uri, parsed);
    if (isMigrationRunning(this.status)) throw Errors.migrationActive();
    const runState = this.env.guest.runState.state;
    if (runState === 'inmigrate') throw Errors.guestWaitingIncoming();
    if (runState === 'postmigrate') throw Errors.pausedByPreviousMigration();
    if (opts.blk || opts.inc) {
      if (this.capabilities.block) throw Errors.blockOptionsIncompatible();
      throw Errors.blockMigrationNotBuilt();
    }
    // migrate_init(): silently back to none, then setup with an event.
    this.setupError = undefined;
    this.outgoingState.reset();
    this.outgoingState.change('none', 'setup');
    if (!parsed) {
      try {
        parsed = parseMigrationUri(uri);
      } catch (err) {
        throw this.failSetup(Errors.migrationChannel((err as UriError).message), true);
      }
      if (!parsed) throw this.failSetup(Errors.invalidMigrationProtocol(uri), false);
    }
    if (parsed.kind === 'exec' && this.env.spawnDenied) throw this.failSetup(Errors.cannotFork(), true);
    if (parsed.kind === 'fd') {
      // fd_start_outgoing_migration(): always a name (monitor_get_fd), taken from the monitor;
      // from here the migration owns the descriptor, and closes it when it ends.
      const fd = this.monitorFds()?.take(parsed.name);
      if (fd === undefined) throw this.failSetup(Errors.fdNotFound(parsed.name), true);
      parsed = { ...parsed, fd: new OwnedFd(fd) };
    }
    if (parsed.kind === 'file') {
      try {
        parsed = { ...parsed, fd: new OwnedFd(openOutgoingFile(parsed.path, parsed.offset)) };
      } catch (err) {
        throw this.failSetup(Errors.migrationChannel((err as Error).message), true);
      }
    }
    const owned = parsed.kind === 'fd' || parsed.kind === 'file' ? parsed.fd : undefined;

    const out = new OutgoingMigration({
      guest: this.env.guest,
      machine: this.env.machine,
      globals: this.env.globals,
      caps: { ...this.capabilities },
      params: () => this.parameters,
      state: this.outgoingState,
      takePageThread: this.env.pageThread ? () => this.takePageThread() : undefined,
      announcePass: (pass) => {
        if (this.capabilities.events) this.env.emit('MIGRATION_PASS', { pass });
      },
      log: this.env.log.child({ migration: 'out', uri }),
      colo: {
        failover: this.failover,
        stats: this.coloStats,
        digest: this.env.coloDigest,
        crashAt: () => this.crashAt,
        announceExit: (reason) => this.coloExited('primary', reason),
      },
    });
    this.outgoing = out;
    const unyank = this.env.registerYank(() => out.yank());
    void out.run(parsed).finally(() => {
      unyank();
      owned?.release();
      this.bootPageThread();
    });
  }

  /**
   * migrate with resume (migrate_prepare()'s resume branch): a paused postcopy migration goes on
   * over a new connection; the state is left as it is until that connection is there.
   */
  private resume(uri: string, parsed: MigrationUri | undefined): void {
    if (this.status !== 'postcopy-paused' || !this.outgoing) throw Errors.noPausedMigration();
    parsed ??= parseUri(uri, Errors.invalidMigrationProtocol);
    if (parsed.kind !== 'tcp' && parsed.kind !== 'unix') throw Errors.migrationChannel('postcopy recovery needs a socket (tcp: or unix:)');
    this.outgoing.resume(parsed);
  }

  /** qmp_migrate_start_postcopy() */
  startPostcopy(): void {
    if (!this.capabilities['postcopy-ram']) throw Errors.postcopyNotEnabled();
    if (this.status === 'none') throw Errors.postcopyNotStarted();
    // Not an error once the migration has finished: that would race with the command.
    this.outgoing?.startPostcopy();
  }

  /** qmp_migrate_pause(): the source's channel in postcopy, else the destination's. */
  pause(): void {
    const from = activeProfile().postcopy.pauseFrom;
    if (from.includes(this.status)) return this.outgoing!.pause();
    if (from.includes(this.incomingState.status)) return this.incoming!.pause();
    throw Errors.migratePauseNotPostcopy();
  }

  /** qmp_migrate_recover(): the paused destination listens for the source's new connection. */
  async recover(uri: string): Promise<void> {
    if (this.incomingState.status !== 'postcopy-paused' || !this.incoming) throw Errors.recoverNotPaused();
    // qemu_start_incoming_migration(), as for migrate-incoming: 7.2 announces setup first.
    if (!activeProfile().migration.incomingEntersSetup) this.env.emit('MIGRATION', { status: 'setup' });
    const parsed = parseUri(uri, Errors.unknownMigrationProtocol);
    try {
      await this.incoming.recover(parsed);
    } catch (err) {
      throw Errors.migrationChannel((err as Error).message);
    }
  }

  /** migrate_fd_error() for a failure found before any channel exists. */
  private failSetup(err: QmpError, recordError: boolean): QmpError {
    this.outgoing = undefined;
    this.setupError = recordError ? err.desc : undefined;
    this.outgoingState.change('setup', 'failed');
    return err;
  }

  /** qmp_migrate_cancel() */
  cancel(): void {
    if (isInPostcopy(this.status) && activeProfile().postcopy.cancel === 'refused') throw Errors.postcopyCannotCancel();
    this.outgoing?.cancel();
  }

  /** qmp_migrate_continue() */
  continue(state: MigrationStatus): void {
    if (this.status !== state) throw Errors.migrationNotInState(this.status);
    this.outgoing?.continue();
  }

  /** qmp_migrate_incoming(): also the path -incoming URI takes at start-up. */
  async startIncoming(target: MigrationTarget | string): Promise<void> {
    if (typeof target === 'string') target = { uri: target };
    if (this.incomingStarted) throw Errors.incomingAlreadyStarted();
    if (this.env.guest.runState.state !== 'inmigrate') throw Errors.incomingNotSpecified();
    // 7.2's qemu_start_incoming_migration() announces setup first, whatever the events capability
    // says and whether or not the URI then turns out to be good (a failed attempt may be retried).
    // Later releases check uri and channels first.
    const early = activeProfile().migration.uriParsedBeforeSetup;
    let parsed: MigrationUri | undefined = early ? this.resolveTarget(target, 'incoming') : undefined;
    if (parsed) this.checkTransport(parsed);
    const uri = target.uri ?? parsed?.text ?? '';
    if (!activeProfile().migration.incomingEntersSetup) this.env.emit('MIGRATION', { status: 'setup' });
    parsed ??= parseUri(uri, Errors.unknownMigrationProtocol);
    if (activeProfile().migration.incomingEntersSetup) {
      // A failed attempt leaves setup behind, and QEMU then refuses another one.
      if (this.incomingState.status !== 'none') throw Errors.illegalIncomingState(this.incomingState.status);
      this.incomingState.change('none', 'setup');
    }
    if (parsed.kind === 'exec' && this.env.spawnDenied) throw Errors.cannotFork();
    // Before the first await: the monitor's names are reachable only while its command runs.
    if (parsed.kind === 'fd') parsed = { ...parsed, fd: this.incomingFd(parsed.name) };
    const incoming = new IncomingMigration({
      guest: this.env.guest,
      // multifd with mapped-ram reads the one file in parallel: no channels to wait for.
      multifdChannels: () => (this.capabilities.multifd && !capability(this.capabilities, 'mapped-ram') ? this.parameters['multifd-channels'] : 0),
      switchoverAck: () => capability(this.capabilities, 'switchover-ack'),
      capability: (name) => capability(this.capabilities, name),
      machine: this.env.machine,
      globals: this.env.globals,
      pageThread: this.env.pageThread,
      takeLoadThread: () => this.takeLoadThread(),
      state: this.incomingState,
      log: this.env.log.child({ migration: 'in', uri }),
      onFailed: (lines, desc) => {
        if (target['exit-on-error'] ?? true) return this.env.onFatal(lines);
        // process_incoming_migration_co(): the reports stay, the summary becomes the error.
        for (const line of lines) if (line !== desc) this.env.log.error(line);
        this.incomingError = desc;
      },
      colo: {
        failover: this.failover,
        stats: this.coloStats,
        digest: this.env.coloDigest,
        announceExit: (reason) => this.coloExited('secondary', reason),
        relaunch: () => {
          // The RELAUNCH path: back to none, then a fresh failover request.
          this.failover.change('relaunch', 'none');
          this.requestFailover();
        },
      },
    });
    try {
      await incoming.listen(parsed);
    } catch (err) {
      if (parsed.kind === 'fd') parsed.fd?.release();
      throw Errors.migrationChannel((err as Error).message);
    }
    this.incomingStarted = true;
    this.incoming = incoming;
  }

  /**
   * monitor_fd_param(): a name (not starting with a digit) on the calling monitor, else a
   * descriptor number, as qemu_parse_fd() reads one (-incoming on the command line has no
   * monitor, so there even a name is read as a number).
   */
  private incomingFd(text: string): OwnedFd {
    const monitor = this.monitorFds();
    if (monitor && !/^[0-9]/.test(text)) {
      const fd = monitor.take(text);
      if (fd === undefined) throw Errors.fdNotFound(text);
      return new OwnedFd(fd);
    }
    // strtol(): leading blanks and a sign; the whole text a number from 0 to INT_MAX.
    const m = /^[\t\n\v\f\r ]*\+?(\d+)$/.exec(text);
    if (!m || Number(m[1]) > 0x7fffffff) throw Errors.invalidFdNumber(text);
    return new OwnedFd(Number(m[1]));
  }

  /** qmp_migrate_set_capabilities() */
  setCapabilities(list: Array<{ capability: Capability; state: boolean }>): void {
    if (isMigrationRunning(this.status)) throw Errors.migrationActive();
    const next = { ...this.capabilities };
    for (const { capability, state } of list) next[capability] = state;
    checkCapabilities(next, this.capabilities, this.parameters);
    this.capabilities = next;
  }

  queryCapabilities(): Array<{ capability: Capability; state: boolean }> {
    return capabilityNames().map((capability) => ({ capability, state: this.capabilities[capability] }));
  }

  /** qmp_migrate_set_parameters(): the merged set is checked whole, then applied at once. */
  setParameters(changes: Record<string, unknown>): void {
    const next = mergeParameters(this.parameters, changes);
    checkParameters(next, this.capabilities);
    this.parameters = next;
    // A new checkpoint delay during COLO forces a checkpoint at once (migrate_params_apply).
    if ('x-checkpoint-delay' in changes) this.outgoing?.requestCheckpoint();
  }

  /** get_colo_mode(): from the outgoing and incoming states. */
  get coloMode(): ColoMode {
    if (this.outgoingState.status === 'colo') return 'primary';
    if (this.incomingState.status === 'colo') return 'secondary';
    return 'none';
  }

  /** qmp_x_colo_lost_heartbeat() */
  lostHeartbeat(): void {
    if (this.coloMode === 'none') throw Errors.coloNotEnabled();
    if (!this.requestFailover()) throw Errors.coloFailoverActive();
  }

  /**
   * COLO_EXIT (never gated by `events`). Like QEMU, a side that lost its peer waits for
   * x-colo-lost-heartbeat; with --colo-heartbeat-timeout it asks for the failover itself.
   */
  private coloExited(mode: ColoMode, reason: 'request' | 'error'): void {
    this.env.emit('COLO_EXIT', { mode, reason });
    const timeout = this.env.coloHeartbeatTimeoutMs;
    if (reason !== 'error' || timeout <= 0) return;
    setTimeout(() => {
      if (this.coloMode === 'none' || this.failover.status !== 'none') return;
      this.env.log.warn({ timeoutMs: timeout }, 'COLO: no heartbeat from the peer; failing over');
      this.requestFailover();
    }, timeout).unref();
  }

  /** failover_request_active(): none → require, then the failover runs on the next turn. */
  private requestFailover(): boolean {
    if (this.failover.change('none', 'require') !== 'none') return false;
    setImmediate(() => this.doFailover());
    return true;
  }

  /** colo_failover_bh() and colo_do_failover() */
  private doFailover(): void {
    const old = this.failover.change('require', 'active');
    if (old !== 'require') {
      this.env.log.error(`Unknown error for failover, old_state = ${old}`);
      return;
    }
    const { runState } = this.env.guest;
    if (runState.running) runState.stop('colo');
    const mode = this.coloMode;
    this.lastColoMode = mode;
    if (mode === 'primary') this.outgoing?.failoverPrimary();
    else if (mode === 'secondary') this.incoming?.failoverSecondary();
    else this.env.log.error('colo_do_failover failed because the colo mode could not be obtained');
  }

  /** qmp_query_colo_status() */
  coloStatus(): { mode: ColoMode; 'last-mode': ColoMode; reason: string } {
    const f = this.failover.status;
    const reason = f === 'none' ? 'none' : f === 'completed' ? 'request' : this.outgoingState.status === 'colo' ? 'processing' : 'error';
    return { mode: this.coloMode, 'last-mode': this.lastColoMode, reason };
  }

  queryParameters(): Record<string, unknown> {
    return { ...this.parameters };
  }

  /** qmp_query_migrate(): destination facts first, then the source's overwrite them. */
  info(): Record<string, unknown> {
    const info: Record<string, unknown> = {};
    const inc = this.incoming;
    if (inc?.socketAddress) info['socket-address'] = [inc.socketAddress];
    if (this.incomingState.status !== 'none') info.status = this.incomingState.status;
    if (this.incomingError) info['error-desc'] = this.incomingError;
    // fill_destination_postcopy_migration_info(): in completed, per vCPU (the one) and in all.
    const blocktime = this.incomingState.status === 'completed' ? inc?.blocktime?.() : undefined;
    if (blocktime !== undefined) {
      info['postcopy-blocktime'] = blocktime;
      info['postcopy-vcpu-blocktime'] = [blocktime];
    }
    const s = this.status;
    const out = this.outgoing;
    switch (s) {
      case 'none':
        return info;
      case 'setup':
      case 'cancelled':
      case 'wait-unplug':
      case 'colo':
        info.status = s;
        return info;
      case 'failed':
        info.status = s;
        if (out?.error ?? this.setupError) info['error-desc'] = out?.error ?? this.setupError;
        return info;
      default:
        break;
    }
    info.status = s;
    if (!out?.ram) return info;
    const completed = s === 'completed';
    info['setup-time'] = out.setupTime;
    // 10.0 shows postcopy's downtime (0 until completion) and why it paused, while in postcopy.
    const postcopyShown = isInPostcopy(s) && activeProfile().postcopy.downtime === 'until-completion';
    if (postcopyShown && out.pauseError) info['error-desc'] = out.pauseError;
    if (completed) {
      info['total-time'] = out.totalTime;
      info.downtime = out.downtime;
    } else {
      info['total-time'] = Date.now() - out.startTime;
      if (postcopyShown) info.downtime = out.downtime;
      else info['expected-downtime'] = Math.round(out.expectedDowntime);
    }
    const ram = out.ram;
    const c = ram.counters;
    info.ram = {
      transferred: out.transferred,
      remaining: completed ? 0 : ram.remainingBytes,
      total: this.env.guest.ram.size,
      duplicate: c.duplicate,
      skipped: 0,
      normal: c.normal,
      'normal-bytes': c.normal * 4096,
      'dirty-pages-rate': completed ? 0 : c.dirtyPagesRate,
      mbps: out.mbps,
      'dirty-sync-count': c.dirtySyncCount,
      'postcopy-requests': out.requests?.count ?? 0,
      'page-size': 4096,
      'multifd-bytes': c.multifdBytes,
      'pages-per-second': Math.round(out.pagesPerSecond),
      'precopy-bytes': c.precopyBytes,
      'downtime-bytes': c.downtimeBytes,
      'postcopy-bytes': c.postcopyBytes,
      'dirty-sync-missed-zero-copy': 0,
    };
    for (const member of activeProfile().migration.ramStatsDropped) delete (info.ram as Record<string, unknown>)[member];
    if (this.capabilities.xbzrle) {
      const x = ram.xbzrleCounters;
      info['xbzrle-cache'] = {
        'cache-size': ram.cacheSize,
        bytes: x.bytes,
        pages: x.pages,
        'cache-miss': x.cacheMiss,
        'cache-miss-rate': x.cacheMissRate,
        'encoding-rate': x.encodingRate,
        overflow: x.overflow,
      };
    }
    const throttle = this.env.guest.workload.throttlePercent;
    if (throttle > 0) info['cpu-throttle-percentage'] = throttle;
    return info;
  }
}
