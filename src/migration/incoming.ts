/**
 * The destination side (process_incoming_migration_co in 7.2): wait for the one connection,
 * load the stream into RAM, then start the guest as the source's global state and autostart
 * say. `none` → `active` → `completed`; on a failed load QEMU reports why and exits 1, and so
 * does qmigd (the daemon's onFatal), unless migrate-incoming said exit-on-error false (10.0).
 */
import type { Logger } from 'pino';
import type { Guest } from '../guest/guest.js';
import type { MigrationGlobals } from './globals.js';
import { FaultableWriter } from '../faults/channel-io.js';
import { listenIncoming, type IncomingConnection, type IncomingListener } from './channels/incoming-channel.js';
import { SeekableFileInput } from './channels/file-input.js';
import { SocketInput } from './channels/socket-input.js';
import type { MigrationUri } from './channels/uri.js';
import { LoadError } from './load-error.js';
import { LoadThread } from './ram/load-thread.js';
import { VmLoader, type LoadObserver, type LoadResult } from './loadvm.js';
import type { Writable } from 'node:stream';
import type { Failover } from './colo/failover.js';
import { ColoSecondary } from './colo/secondary.js';
import { MultifdReceiver } from './multifd/receiver.js';
import type { ColoStats } from './colo/stats.js';
import { COMPARE_MAGIC, commandPointName, RAM_SECTION_VERSION, RpMessage, SECTION_RECORDS, VM_FILE_MAGIC, type RecordKind } from './stream/constants.js';
import { faults } from '../faults/faults.js';
import { activeProfile } from '../profiles/index.js';
import { StreamReader, type ByteSource } from './stream/reader.js';
import { be32 } from './stream/writer.js';
import { RamLoader } from './ram/ram-load.js';
import type { MigrationStateCell } from './state.js';

/**
 * Capabilities under which no RAM section is one the load thread can take (RamLoader.threadable),
 * so none starts (postcopy's are, placing each page once from LISTEN on; COLO's, into the cache
 * with its checkpoints).
 */
const NOT_PLAIN = ['mapped-ram'];

/** What a COLO secondary shares with the daemon. */
export interface IncomingColoContext {
  failover: Failover;
  stats: ColoStats;
  digest: boolean;
  announceExit: (reason: 'request' | 'error') => void;
  relaunch: () => void;
}

export interface IncomingEnv {
  guest: Guest;
  /** multifd-channels when this side has the multifd capability, else 0. */
  multifdChannels: () => number;
  /** The switchover-ack capability is on here (8.1+). */
  switchoverAck: () => boolean;
  /** Whether a capability is on here (the configuration's validated ones, mapped-ram). */
  capability: (name: string) => boolean;
  colo: IncomingColoContext;
  machine: string;
  /** The migration object's properties: multifd-flush-after-each-section says when channels sync. */
  globals: MigrationGlobals;
  /** --page-thread: plain RAM sections load on a thread of their own (ram/load-thread.ts). */
  pageThread: boolean;
  /** That thread where it booted with the daemon (a destination from its start), once. */
  takeLoadThread: () => Promise<LoadThread | undefined> | undefined;
  state: MigrationStateCell;
  log: Logger;
  /**
   * A failed incoming migration: `lines` are everything QEMU reports when it then exits, `desc`
   * the one error it keeps for query-migrate when it does not (10.0's exit-on-error false).
   */
  onFailed: (lines: string[], desc: string) => void;
}

export class IncomingMigration {
  private listener?: IncomingListener;
  /** Dropped once the incoming state is destroyed, as mis->socket_address. */
  socketAddress?: Record<string, unknown>;
  private coloEnabled = false;
  private secondary?: ColoSecondary;
  private conn?: IncomingConnection;
  private coloReleased?: () => void;
  /** Closes the load thread that loads COLO's checkpoints (a failover ends them). */
  private closeColoLoadThread?: () => void;
  private compareConn?: IncomingConnection;
  private multifd?: MultifdReceiver;
  /** postcopy-blocktime's total, where that capability was on as postcopy began (completed only). */
  blocktime?: () => number;
  private loader?: VmLoader;
  private preemptConn?: IncomingConnection;
  /** The preempt channel's loading, until its EOS, its end or its failure. */
  private preemptLoad?: Promise<void>;
  /** A paused postcopy waits here for the connection migrate-recover's listener takes. */
  private recovered?: (conn: IncomingConnection) => void;
  private recoverListener?: IncomingListener;
  /** --page-thread: the load thread, booted as this side starts to listen, until the main channel takes it. */
  private loadThread?: Promise<LoadThread | undefined>;
  /** Resolved once the load thread given the main channel is up (or could not be). */
  private loadThreadSettled?: Promise<void>;

  constructor(private readonly env: IncomingEnv) {}

  async listen(uri: MigrationUri): Promise<void> {
    this.listener = await listenIncoming(uri, (conn) => void this.receive(conn));
    // Up (booted with a destination daemon) or booting, so that its start-up is over before the
    // first RAM section; not kept where no section will be plain, whose load it could not take.
    if (this.env.pageThread && !this.loadThread) {
      const booted = this.env.takeLoadThread();
      if (this.plainSections()) this.loadThread = booted ?? bootLoadThread(this.env.guest.ram, this.env.log);
      else void booted?.then((t) => t?.close());
    }
    this.socketAddress = this.listener.socketAddress;
    this.env.log.info('waiting for an incoming migration');
  }

  private async receive(conn: IncomingConnection): Promise<void> {
    const channels = this.env.multifdChannels();
    if (channels > 0 && activeProfile().multifd.channelOrder === 'magic') {
      // 8.0+ (migration_ioc_process_incoming): a connection's first four bytes say what it is,
      // QEVM the main channel, anything else a multifd channel; they come in any order.
      const reader = new StreamReader(conn.input);
      let magic: number;
      try {
        await reader.need(4);
        magic = reader.peekBe32();
      } catch {
        return conn.close();
      }
      if (magic !== VM_FILE_MAGIC) return this.multifdReceiver(channels).addChannel(conn, reader);
      if (this.conn) return conn.close();
      return this.receiveMain(conn, reader);
    }
    if (this.conn) {
      // 7.2: the first connection is the main channel, every later one a multifd channel.
      if (this.multifd) return this.multifd.addChannel(conn);
      // With postcopy-preempt, the second one is its channel (no magic tells: the order does).
      if (this.env.capability('postcopy-preempt')) return this.attachPreempt(conn);
      return this.attachCompare(conn);
    }
    return this.receiveMain(conn, new StreamReader(conn.input));
  }

  /** The destination's multifd state, made by whichever of its connections comes first. */
  private multifdReceiver(channels: number): MultifdReceiver {
    const { env } = this;
    this.multifd ??= new MultifdReceiver(env.guest.ram, channels, (line) => env.log.error(line), (line) => this.failChannel(line));
    return this.multifd;
  }

  /** A bad multifd channel where it fails the migration (10.0: reported, then exit 1). */
  private failChannel(line: string): void {
    const { env } = this;
    if (env.state.status === 'active') env.state.change('active', 'failed');
    this.conn?.close();
    this.destroy();
    env.onFailed([line], line);
  }

  private async receiveMain(conn: IncomingConnection, input: StreamReader): Promise<void> {
    const { env } = this;
    const channels = env.multifdChannels();
    if (channels > 0) this.multifdReceiver(channels);
    const rp = new ReturnPath(conn);
    const started = Date.now();
    // mis->blocktime_ctx: made when postcopy starts listening, if postcopy-blocktime is on then.
    let blocktime: (() => number) | undefined;
    this.conn = conn;
    const loader = new VmLoader({
      ram: env.guest.ram,
      machine: env.machine,
      hooks: {
        openReturnPath: () => {
          rp.open = conn.output !== undefined;
          // loadvm_process_command(): no device here needs to agree to the switchover, so the
          // ack goes as soon as there is a way back.
          if (env.switchoverAck()) rp.send(RpMessage.SWITCHOVER_ACK);
          return rp.open;
        },
        sendPong: (v) => {
          rp.send(RpMessage.PONG, be32(v));
          return rp.open;
        },
        enableColo: () => (this.coloEnabled = true),
        xColo: () => env.capability('x-colo'),
        postcopy: {
          postcopyRam: () => env.capability('postcopy-ram'),
          listen: () => {
            if (env.capability('postcopy-blocktime')) blocktime = () => loader.postcopy.blocktime;
            env.state.change('active', 'postcopy-active');
          },
          // loadvm_postcopy_handle_run_bh(): the guest starts (or, with -S, waits paused), and
          // waits for any page it touches that is not here yet.
          run: (gate) => {
            env.log.info({ loadThreadPages: loader.loadThreadPages }, 'postcopy: the guest runs here');
            env.guest.workload.gate = gate;
            if (env.guest.autostart) env.guest.runState.start();
            else env.guest.runState.set('paused');
          },
          arrived: (page) => env.guest.workload.pageArrived(page),
          sendRp: (type, payload, raw) => rp.send(type, payload, raw),
          recovering: () => env.state.status === 'postcopy-recover',
          resumed: () => env.state.change('postcopy-recover', 'postcopy-active'),
          paused: (err): Promise<StreamReader | undefined> => this.postcopyPaused(err, rp, loader),
        },
      },
      warn: (m) => env.log.warn(m),
      capability: env.capability,
      mapped: env.capability('mapped-ram') ? conn.file : undefined,
      observer: faultPoints(input),
    });
    this.loader = loader;
    this.startLoadThread(loader, conn.input);
    if (this.multifd) {
      const multifd = this.multifd;
      // ram_load_precopy(): with multifd-flush-after-each-section (7.2 always) the channels sync
      // at every RAM EOS; 8.1+ syncs at every MULTIFD_FLUSH record whatever the property says.
      if (env.globals['multifd-flush-after-each-section']) loader.ramLoader.onEos = () => multifd.syncMain();
      if (activeProfile().multifd.flushRecord) loader.ramLoader.onFlush = () => multifd.syncMain();
      // The migration starts once every channel is there (7.2 reads nothing of the main channel
      // before); a main channel that has ended already will not become a stream meanwhile.
      const mainEnded = new Promise<void>((r) => {
        conn.input.on('end', r);
        conn.input.on('close', r);
      });
      void mainEnded.then(() => multifd.mainChannelEnded());
      await Promise.race([multifd.ready, mainEnded]);
    }
    // From setup where migrate-incoming entered it (8.2 on), else from none (7.2).
    env.state.change(env.state.status === 'setup' ? 'setup' : 'none', 'active');
    // A file has no source that comes later: its stream waits for the load thread (booting since
    // the daemon started or listen()), so that none of its sections loads here.
    if (conn.input instanceof SeekableFileInput) await this.loadThreadSettled;
    const closeLoadThread = (): void => loader.endLoadThread();
    try {
      const result = await loader.loadStream(input);
      // COLO's checkpoints load on the load thread too; it is closed as they end.
      if (this.coloEnabled && conn.output) return await this.runColo(input, conn.output, loader, closeLoadThread);
      // The preempt channel may load on the load thread: it closes after.
      if (result.postcopy) await this.preemptEnded(loader);
      else this.startGuest(result); // in postcopy it started at RUN
      closeLoadThread();
      env.log.info({ bytes: result.bytes, pages: result.pages, loadThreadPages: loader.loadThreadPages, ms: Date.now() - started }, 'incoming migration completed');
      this.blocktime = blocktime;
      env.state.change(result.postcopy ? 'postcopy-active' : 'active', 'completed');
      rp.send(RpMessage.SHUT, be32(0));
      rp.end();
      this.destroy();
    } catch (err) {
      closeLoadThread();
      env.state.change(loader.postcopy.listening ? env.state.status : 'active', 'failed');
      rp.send(RpMessage.SHUT, be32(1));
      this.conn?.close();
      this.destroy();
      const desc = err instanceof LoadError ? err.summary : `load of migration failed: ${(err as Error).message}`;
      const lines = err instanceof LoadError ? [...err.lines, desc, err.located] : [desc];
      // 10.0 also reports what a channel failed with (migrate_set_error() from its thread).
      const channelError = this.multifd?.error;
      if (channelError && activeProfile().multifd.channelErrorReported) lines.push(channelError);
      env.onFailed(lines, desc);
    }
  }

  /**
   * The COLO incoming thread: state colo, checkpoints until COLO ends, COLO_EXIT, then wait for
   * x-colo-lost-heartbeat (failoverSecondary), after which this guest runs on as a primary would.
   */
  private async runColo(input: StreamReader, output: Writable, loader: VmLoader, closeLoadThread: () => void): Promise<void> {
    const { env } = this;
    this.closeColoLoadThread = closeLoadThread;
    env.state.change('active', 'colo');
    env.log.info('COLO secondary: checkpoints begin');
    const released = new Promise<void>((r) => (this.coloReleased = r));
    this.secondary = new ColoSecondary({
      guest: env.guest,
      input,
      output,
      loader,
      failover: env.colo.failover,
      stats: env.colo.stats,
      log: env.log,
      digest: env.colo.digest,
      relaunch: env.colo.relaunch,
    });
    const before = loader.loadThreadPages ?? 0;
    const reason = await this.secondary.run();
    // The checkpoints are over: the load thread's duplicate of the channel's descriptor would hold
    // the connection open, and the primary would not see it end.
    closeLoadThread();
    env.log.info({ checkpoints: env.colo.stats.checkpoints, pagesOnLoadThread: (loader.loadThreadPages ?? 0) - before }, 'COLO checkpoints over');
    env.colo.announceExit(reason);
    await released;
    this.secondary = undefined;
    // The parked incoming coroutine resumes: the normal completion starts the guest.
    env.guest.runState.start();
    this.conn?.close();
    this.compareConn?.close();
    this.destroy();
  }

  /**
   * A later connection: the primary's colo-compare asking for this guest's output ('QMCC'),
   * which only a COLO secondary gives; anything else is turned away.
   */
  private async attachCompare(conn: IncomingConnection): Promise<void> {
    const r = new StreamReader(conn.input);
    try {
      await r.need(4);
    } catch {
      return conn.close();
    }
    if (r.be32() !== COMPARE_MAGIC || !this.coloEnabled || !conn.output) return conn.close();
    const out = new FaultableWriter(conn.output, { channel: 'colo-compare', side: 'send' });
    const off = this.env.guest.output.onPacket((p) => {
      const b = Buffer.alloc(12);
      b.writeUInt32BE(p.epoch, 0);
      b.writeUInt32BE(p.seq, 4);
      b.writeUInt32BE(p.payload, 8);
      out.write(b);
    });
    conn.input.on('close', off);
    this.compareConn = conn;
  }

  /**
   * postcopy-preempt's channel (postcopy_preempt_thread()): bare RAM records, the pages the guest
   * asked for, placed as the main channel's are, until an EOS (7.2's layout) or its end. A
   * broken one just ends: the main channel's failure is what pauses the migration.
   */
  private attachPreempt(conn: IncomingConnection): void {
    const loader = this.loader;
    if (!loader) return conn.close();
    const main = loader.ramLoader;
    this.preemptConn?.close();
    this.preemptConn = conn;
    if (conn.input instanceof SocketInput) conn.input.markFaultable({ channel: 'postcopy-preempt', side: 'receive' });
    // The reader at once: the connection is flowing, and its bytes go to the reader.
    const reader = new StreamReader(conn.input);
    this.preemptLoad = (async () => {
      let err: unknown;
      // Its pages come from RUN on (7.2's layout connects it with the migration); the load
      // thread takes it where it can, beside the main channel's sections.
      await loader.postcopy.running;
      await this.loadThreadSettled;
      const onThread = loader.liveLoadThread?.loadPreempt(reader, main);
      try {
        await (onThread ?? new RamLoader(this.env.guest.ram, undefined, main).load(reader, RAM_SECTION_VERSION));
      } catch (e) {
        err = e;
      }
      this.env.log.info({ onLoadThread: onThread !== undefined, err: err === undefined ? undefined : err instanceof LoadError ? err.summary : (err as Error).message }, 'postcopy preempt channel ended');
      conn.close();
    })();
  }

  /**
   * postcopy_ram_incoming_cleanup(): the main channel's EOF does not end a postcopy while the
   * preempt channel may still carry pages. 7.2's layout waits for that channel's EOS; 8.0+'s
   * for every page the guest asked for (destroy() then shuts the channel).
   */
  private async preemptEnded(loader: VmLoader): Promise<void> {
    const load = this.preemptLoad;
    if (!load) return;
    if (!this.env.globals['x-preempt-pre-7-2']) await Promise.race([loader.postcopy.requestsServed(), load]);
    else await load;
  }

  /** secondary_vm_do_failover() */
  failoverSecondary(): void {
    const { env } = this;
    if (this.secondary?.loading) {
      // Not while a checkpoint is being loaded: the loader relaunches the failover after it.
      const old = env.colo.failover.change('active', 'relaunch');
      if (old !== 'active') env.log.error(`Unknown error while do failover for secondary VM,old_state: ${old}`);
      return;
    }
    env.state.change('colo', 'completed');
    // "-S" does not hold a secondary that takes over.
    env.guest.autostart = true;
    this.closeColoLoadThread?.();
    this.conn?.close();
    const old = env.colo.failover.change('active', 'completed');
    if (old !== 'active') env.log.error(`Incorrect state (${old}) while doing failover for secondary VM`);
    this.coloReleased?.();
  }

  /**
   * process_incoming_migration_bh(): autostart applies when the source was running (9.0+: or
   * suspended, which the next start then resumes into).
   */
  private startGuest({ globalState, wasSuspended }: LoadResult): void {
    const { guest } = this.env;
    guest.runState.resumeSuspended = wasSuspended;
    const live = globalState === undefined || globalState === 'running' || (wasSuspended && globalState === 'suspended');
    if (live) {
      if (guest.autostart) guest.runState.start();
      else guest.runState.set('paused');
    } else guest.runState.set(globalState as never);
  }

  /**
   * postcopy_pause_incoming(): the stream failed while the guest runs here. The guest goes on
   * with the pages it has (and waits on the others) in postcopy-paused, until migrate-recover
   * brings the source's new connection: postcopy-recover, and loading goes on from it.
   */
  private async postcopyPaused(err: unknown, rp: ReturnPath, loader: VmLoader): Promise<StreamReader | undefined> {
    const { env } = this;
    const from = env.state.status;
    if (from !== 'postcopy-active' && from !== 'postcopy-recover') return undefined;
    if (from === 'postcopy-recover' && activeProfile().postcopy.failedRecovery === 'source-stuck-destination-crashes') {
      // 7.2's listen thread goes on with no channel and crashes; the orchestrator sees that.
      env.log.fatal('QEMU 7.2 crashes here (SIGSEGV: a failure during postcopy recovery, fixed in 8.2); so does this daemon in its profile');
      process.kill(process.pid, 'SIGSEGV');
    }
    env.state.change(from, 'postcopy-paused');
    env.log.error({ err: err instanceof LoadError ? err.summary : (err as Error).message }, 'Detected IO failure for postcopy. Migration paused.');
    this.conn?.close();
    this.preemptConn?.close();
    rp.open = false;
    // The paused loader closed its load thread (loadvm.ts); a new one boots during the pause and
    // takes the channel the recovery brings.
    const hadThread = loader.loadThreadPages !== undefined;
    if (hadThread) this.loadThread ??= LoadThread.boot(env.guest.ram);
    const conn = await new Promise<IncomingConnection>((r) => (this.recovered = r));
    this.conn = conn;
    rp.attach(conn);
    // The reader first: the connection is flowing already, and its bytes go to the reader.
    const reader = new StreamReader(conn.input);
    if (hadThread) this.startLoadThread(loader, conn.input);
    env.state.change('postcopy-paused', 'postcopy-recover');
    // Booted since the pause, it is up now or soon: loading goes on once it is, so that no
    // page is loaded here.
    await this.loadThreadSettled;
    env.log.info({ loadThreadPages: loader.loadThreadPages }, 'postcopy: recovering');
    return reader;
  }

  /**
   * migrate-recover: listen on `uri` (in place of any earlier recovery listener: it may be given
   * again while paused); the first connection there resumes the paused migration.
   */
  async recover(uri: MigrationUri): Promise<void> {
    this.recoverListener?.close();
    this.recoverListener = undefined;
    const listener = await listenIncoming(uri, (conn) => {
      const resume = this.recovered;
      this.recovered = undefined;
      const { status } = this.env.state;
      if (resume && status === 'postcopy-paused') return resume(conn);
      // migration_ioc_process_incoming(): with the main channel back, the next is preempt's,
      // whatever the recovery reached meanwhile (8.0+'s source connects it after the bitmap,
      // and this side may have taken the RESUME before it takes the connection).
      if (this.env.capability('postcopy-preempt') && (status === 'postcopy-recover' || status === 'postcopy-active')) return this.attachPreempt(conn);
      conn.close();
    });
    this.recoverListener = listener;
  }

  /** migrate-pause on the destination: the channel is shut down, and postcopy pauses. */
  pause(): void {
    this.conn?.close();
  }

  /**
   * The booted load thread with the main channel `input`, where the sections can be plain (caps
   * may have changed since listen()); else it is closed unattached: a duplicate of the
   * descriptor in a thread that takes no section would only hold the channel open (as it would
   * past a postcopy pause, or a COLO failover: VmLoader ends it as postcopy pauses, and it is
   * closed as the first stream ends, or as COLO's checkpoints end).
   */
  private attachLoadThread(input: ByteSource): Promise<LoadThread | undefined> | undefined {
    const booted = this.loadThread;
    this.loadThread = undefined;
    const plain = this.plainSections();
    return booted?.then((t) => {
      if (t && plain && t.attach(input)) return t;
      t?.close();
      return undefined;
    });
  }

  /**
   * The booted load thread for the sections `loader` reads from `input`: they load here until it
   * is up (loadThreadSettled says when it is, or cannot be).
   */
  private startLoadThread(loader: VmLoader, input: ByteSource): void {
    this.loadThreadSettled = this.attachLoadThread(input)?.then((t) => {
      if (t && loader.useLoadThread(t)) this.env.log.info('RAM sections load on the load thread from here on');
    });
  }

  /** Whether this side's RAM sections can be plain (RamLoader.plain), so the load thread can take them. */
  private plainSections(): boolean {
    return !NOT_PLAIN.some((c) => this.env.capability(c));
  }

  private destroy(): void {
    void this.loadThread?.then((t) => t?.close()); // booted for a migration that did not come
    this.loadThread = undefined;
    this.env.guest.workload.openGate();
    this.preemptConn?.close();
    this.recoverListener?.close();
    this.listener?.close();
    this.multifd?.close();
    this.socketAddress = undefined;
  }
}

/** Boots a load thread for `ram`, which says so in the log once it is up. */
export function bootLoadThread(ram: Guest['ram'], log: Logger): Promise<LoadThread | undefined> {
  const booted = LoadThread.boot(ram);
  void booted.then((t) => t && log.info('load thread ready for the incoming migration'));
  return booted;
}

/**
 * Faults placed at a stream point (src/faults) fire as the destination reads the record; one
 * that closes or resets the connection ends the stream right there.
 */
function faultPoints(input: StreamReader): LoadObserver {
  const at = (kind: RecordKind, name: string | undefined): void => {
    if (faults.any && faults.point('receive', kind, name, input.consumed)) input.cut();
  };
  return {
    section: (s) => at(SECTION_RECORDS[s.type]!, s.idstr),
    command: (_offset, name) => at('command', commandPointName(name)),
    eof: () => at('eof', undefined),
  };
}

/**
 * The destination's end of the return path (migrate_send_rp_message()): the main connection's
 * way back once OPEN_RETURN_PATH came, a recovered postcopy's new connection after a pause.
 */
class ReturnPath {
  open = false;
  private out?: FaultableWriter;

  constructor(conn: IncomingConnection) {
    this.out = ReturnPath.writer(conn);
  }

  /** A recovery's connection: the way back is open on it at once (qemu_file_get_return_path()). */
  attach(conn: IncomingConnection): void {
    this.out = ReturnPath.writer(conn);
    this.open = this.out !== undefined;
  }

  private static writer(conn: IncomingConnection): FaultableWriter | undefined {
    return conn.output && new FaultableWriter(conn.output, { channel: 'return-path', side: 'send' });
  }

  /** be16 type, be16 length, the payload; then `raw`, outside the framing (a received bitmap). */
  send(type: number, payload: Buffer = EMPTY, raw: Buffer = EMPTY): void {
    if (!this.open || !this.out) return;
    const head = Buffer.alloc(4);
    head.writeUInt16BE(type, 0);
    head.writeUInt16BE(payload.length, 2);
    this.out.write(Buffer.concat([head, payload, raw]));
  }

  end(): void {
    this.out?.end();
  }
}

const EMPTY = Buffer.alloc(0);
