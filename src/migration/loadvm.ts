/**
 * qemu_loadvm_state() for a `-M none` guest: header, configuration, then sections and commands
 * until EOF, then the optional VM description. Handlers are looked up by (idstr, instance) at
 * START/FULL and by the sender's section id at PART/END; every section ends in a checked footer.
 * Failures are LoadErrors carrying QEMU's report lines and errno.
 */
import type { GuestRam } from '../guest/ram.js';
import { RUN_STATES, type RunState } from '../guest/run-state.js';
import { activeProfile } from '../profiles/index.js';
import { LoadError } from './load-error.js';
import type { MappedRamBlockInfo, MappedRamSource } from './ram/mapped-ram.js';
import type { LoadThread } from './ram/load-thread.js';
import { RamLoader, type RamFactory } from './ram/ram-load.js';
import {
  Command,
  GLOBALSTATE_STATE_BYTES,
  RAM_SECTION_VERSION,
  Section,
  TIMER_SECTION_VERSION,
  VM_FILE_MAGIC,
  VM_FILE_VERSION,
  VM_FILE_VERSION_COMPAT,
} from './stream/constants.js';
import { Readable } from 'node:stream';
import { StreamEnded, StreamReader } from './stream/reader.js';
import { PostcopyIncoming, PostcopyState, type PostcopyHooks } from './postcopy/incoming.js';

/** What the destination does for commands that need its side of the connection. */
export interface LoadHooks {
  openReturnPath(): boolean;
  sendPong(value: number): boolean;
  /** ENABLE_COLO: the destination becomes a COLO secondary once the stream is loaded. */
  enableColo?(): void;
  /** Whether the destination itself has x-colo on. */
  xColo?(): boolean;
  /** Postcopy's LISTEN and RUN (absent: a stream that advises RAM postcopy is refused). */
  postcopy?: PostcopyHooks;
}

export interface LoadResult {
  /** The run state the source stored in `globalstate`, if it sent one. */
  globalState?: RunState;
  /** globalstate said the guest was suspended (9.0+: its flags, or the run state itself). */
  wasSuspended: boolean;
  bytes: number;
  pages: number;
  /** The RAM the stream was loaded into (made by the factory, if one was given). */
  ram?: GuestRam;
  /** The stream went to postcopy: the guest was started at RUN. */
  postcopy: boolean;
}

/** Everything a stream holds, as the loader meets it: what `qmigd inspect` prints. */
export interface LoadObserver {
  header?(version: number): void;
  configuration?(machine: string): void;
  section?(s: { offset: number; type: number; id: number; idstr: string; instance?: number; version?: number }): void;
  sectionEnd?(offset: number): void;
  ramRecord?(type: number): void;
  mappedRamBlock?(info: MappedRamBlockInfo): void;
  command?(offset: number, name: string, payload: Buffer): void;
  device?(idstr: string, fields: Record<string, string | number | bigint>): void;
  eof?(offset: number): void;
  vmDescription?(offset: number, json: string | undefined): void;
}

export interface LoadOptions {
  /** The destination's RAM, or a factory that makes it from the stream's block list. */
  ram: GuestRam | RamFactory;
  /** Our machine type; a stream for another is refused. Undefined accepts any. */
  machine?: string;
  hooks: LoadHooks;
  warn: (message: string) => void;
  observer?: LoadObserver;
  /**
   * The destination's capabilities, for those the configuration must agree on
   * (profile.stream.validatedCapabilities); without it every one is off, as on a fresh QEMU.
   */
  capability?: (name: string) => boolean;
  /** With mapped-ram on: the file the pages are read from. */
  mapped?: MappedRamSource;
  /**
   * `qmigd inspect`: the validated capabilities are whatever the stream's configuration names
   * (no check), and `mapped` is used only where the stream names mapped-ram.
   */
  capabilitiesFromStream?: boolean;
}

interface Handler {
  idstr: string;
  version: number;
  minVersion: number;
  load(r: StreamReader, version: number): Promise<void>;
}

/** The largest PACKAGED command taken (see processCommand). */
const MAX_PACKAGED = 256 << 20;

/** qemu_loadvm_state(): a whole stream, header to VM description. */
export function loadVmState(r: StreamReader, opts: LoadOptions): Promise<LoadResult> {
  return new VmLoader(opts).loadStream(r);
}

/**
 * The destination's loader. It outlives one stream for COLO: every checkpoint is another run of
 * loadMain() on the same connection (section ids remembered from the first stream), and the
 * device state of a checkpoint is a loadMain() over its buffer.
 */
export class VmLoader {
  readonly ramLoader: RamLoader;
  readonly postcopy: PostcopyIncoming;
  /** The run state the source stored in `globalstate`, if it sent one. */
  globalState?: RunState;
  /** globalstate said the guest was suspended (9.0+: its flags, or the run state itself). */
  wasSuspended = false;
  /** --page-thread: the main channel's RAM sections load on this thread (load-thread.ts). */
  private loadThread?: LoadThread;
  /** Pages loaded by threads before this one (a postcopy recovery brings a new one), and whether loading has ended. */
  private earlierThreadPages = 0;
  private threadsEnded = false;
  private readonly handlers: Handler[];
  private readonly bySectionId = new Map<number, Handler>();

  constructor(private readonly opts: LoadOptions) {
    const obs = opts.observer;
    this.ramLoader = new RamLoader(opts.ram, obs?.ramRecord?.bind(obs));
    this.postcopy = new PostcopyIncoming(opts.hooks.postcopy, this.ramLoader);
    this.ramLoader.mapped = opts.capabilitiesFromStream ? undefined : opts.mapped;
    this.ramLoader.observeMapped = obs?.mappedRamBlock?.bind(obs);
    this.handlers = [
      // ram_load() itself refuses any version but 4, with no message of its own.
      { idstr: 'ram', version: RAM_SECTION_VERSION, minVersion: 0, load: (rr, v) => this.loadRam(rr, v) },
      {
        idstr: 'timer', version: TIMER_SECTION_VERSION, minVersion: 1,
        // The guest clock offsets mean nothing to an emulated guest: read, shown to an observer, dropped.
        load: async (rr, v) => {
          await rr.need(v >= 2 ? 24 : 16);
          const ticks = rr.be64big();
          rr.be64big(); // unused
          const clock = v >= 2 ? rr.be64big() : 0n;
          obs?.device?.('timer', { cpu_ticks_offset: BigInt.asIntN(64, ticks), cpu_clock_offset: BigInt.asIntN(64, clock) });
        },
      },
      {
        idstr: 'globalstate', version: 1, minVersion: 1,
        load: async (rr) => {
          const layout = activeProfile().stream.globalState;
          await rr.need(4 + GLOBALSTATE_STATE_BYTES);
          rr.be32(); // size: informative only
          const state = rr.view(GLOBALSTATE_STATE_BYTES);
          // 9.0+ forces a NUL into the last byte of its shorter name field; 7.2 needs one in its 100.
          const raw = state.subarray(0, layout.runstateBytes);
          let nul = raw.indexOf(0);
          if (nul < 0 && layout.suspendFlags) nul = raw.length - 1;
          if (nul < 0) throw new LoadError('EINVAL');
          const name = raw.subarray(0, nul).toString('latin1');
          if (!(RUN_STATES as readonly string[]).includes(name)) throw new LoadError('EINVAL', `invalid parameter value: ${name}`); // qapi_enum_parse(), 7.2 and 10.0 alike
          this.globalState = name as RunState;
          // global_state_post_load() (9.0+): the source stores its state before it stops the
          // guest, so a `suspended` state counts as suspended whatever the flag says.
          const flag = state[layout.runstateBytes]! && state[layout.runstateBytes + 1]!;
          this.wasSuspended = layout.suspendFlags && (flag !== 0 || name === 'suspended');
          obs?.device?.('globalstate', layout.suspendFlags ? { runstate: name, vm_was_suspended: flag } : { runstate: name });
        },
      },
    ];
  }

  /** Header, sections to EOF, then the optional VM description. */
  async loadStream(r: StreamReader): Promise<LoadResult> {
    const { opts } = this;
    const obs = opts.observer;
    try {
      try {
        const received = await loadHeader(r, opts.machine, obs, opts.capabilitiesFromStream ? undefined : opts.capability ?? (() => false));
        if (opts.capabilitiesFromStream && received.has('mapped-ram')) {
          if (!opts.mapped) throw new LoadError('EINVAL', 'mapped-ram: the pages are at offsets of a file; read the file, not a pipe');
          this.ramLoader.mapped = opts.mapped;
        }
      } catch (err) {
        if (err instanceof StreamEnded) throw new LoadError('EINVAL', 'Not a migration stream');
        throw err;
      }
      r = await this.sectionsToEofPausing(r);
      // The VM description is optional for a 7.2 destination: anything else is only logged.
      // atEnd() false leaves the next byte ready for u8(), wherever the source's chunks end.
      // In postcopy the listen thread reads to EOF only: the source sends none.
      const at = r.consumed;
      if (this.postcopy.listening) {
        /* no VM description */
      } else if (!(await r.atEnd())) {
        const next = r.u8();
        if (next === Section.VMDESCRIPTION) {
          await eio(r.need(4));
          const len = r.be32();
          if (obs?.vmDescription) obs.vmDescription(at, (await eio(r.bytes(len))).toString('latin1'));
          else await eio(r.skip(len));
        } else opts.warn(`Expected vmdescription section, but got ${next}`);
      } else {
        opts.warn('Expected vmdescription section, but got 0');
        obs?.vmDescription?.(at, undefined);
      }
      return { globalState: this.globalState, wasSuspended: this.wasSuspended, bytes: r.consumed, pages: this.ramLoader.pages, ram: this.ramLoader.ram, postcopy: this.postcopy.listening };
    } catch (err) {
      throw located(err, r);
    }
  }

  /**
   * sectionsToEof(), where a failure while the guest runs here in postcopy pauses the migration
   * (qemu_loadvm_state_main()'s retry): loading goes on from the channel a recovery brings.
   * Returns the reader that reached EOF.
   */
  private async sectionsToEofPausing(r: StreamReader): Promise<StreamReader> {
    for (;;) {
      try {
        await this.sectionsToEof(r);
        return r;
      } catch (err) {
        const pausing = this.postcopy.state === PostcopyState.RUNNING;
        // Paused, the load thread ends: its duplicate of the channel's descriptor would hold the
        // connection open. The channel a recovery brings gets a new one (incoming.ts).
        if (pausing) this.loadThread?.close();
        const next = pausing ? await this.opts.hooks.postcopy?.paused(located(err, r)) : undefined;
        if (!next) throw err;
        this.postcopy.channelLost();
        r = next;
      }
    }
  }

  /**
   * The load thread takes the main channel's RAM sections from here on (see RamLoader.threadable);
   * false, and closed, where loading ended before it was up.
   */
  useLoadThread(thread: LoadThread): boolean {
    if (this.threadsEnded) {
      thread.close();
      return false;
    }
    this.earlierThreadPages += this.loadThread?.pages ?? 0;
    this.loadThread = thread;
    return true;
  }

  /** Loading ended (or COLO's checkpoints did): the thread closes, as will one that comes up later. */
  endLoadThread(): void {
    this.threadsEnded = true;
    this.loadThread?.close();
  }

  /** The load thread, while it can take sections. */
  get liveLoadThread(): LoadThread | undefined {
    return this.loadThread?.alive ? this.loadThread : undefined;
  }

  /** Pages the load threads loaded, if they had any part. */
  get loadThreadPages(): number | undefined {
    return this.loadThread && this.earlierThreadPages + this.loadThread.pages;
  }

  /** A RAM section: on the load thread where it can take it, else here. */
  private loadRam(r: StreamReader, version: number): Promise<void> {
    const thread = this.loadThread;
    return thread?.usable(this.ramLoader, r) ? thread.load(r, this.ramLoader, version) : this.ramLoader.load(r, version);
  }

  /** qemu_loadvm_state_main(): sections and commands up to EOF, no header. */
  async loadMain(r: StreamReader): Promise<void> {
    try {
      await this.sectionsToEof(r);
    } catch (err) {
      throw located(err, r);
    }
  }

  /** Sections and commands up to EOF, or to a POSTCOPY_RUN (LOADVM_QUIT), which ends a package. */
  private async sectionsToEof(r: StreamReader): Promise<void> {
    const { observer: obs } = this.opts;
    for (;;) {
      const offset = r.consumed;
      const type = await readOr(r, 1, () => r.u8());
      switch (type) {
        case Section.START:
        case Section.FULL: {
          await eio(r.need(4));
          const id = r.be32();
          const idstr = await eio(r.countedString());
          if (idstr === undefined) throw new LoadError('EINVAL', `Unable to read ID string for section ${id}`);
          await eio(r.need(8));
          const instance = r.be32();
          const version = r.be32();
          const h = this.handlers.find((x) => x.idstr === idstr);
          if (!h || instance !== 0) {
            throw new LoadError('EINVAL', `Unknown savevm section or instance '${idstr}' ${instance}. Make sure that your current VM setup matches your saved VM setup, including any hotplugged devices`);
          }
          if (version > h.version) throw new LoadError('EINVAL', `savevm: unsupported version ${version} for '${idstr}' v${h.version}`);
          this.bySectionId.set(id, h);
          obs?.section?.({ offset, type, id, idstr, instance, version });
          await runHandler(h, r, version, `error while loading state for instance 0x${instance.toString(16)} of device '${idstr}'`);
          await checkFooter(r, h, id);
          obs?.sectionEnd?.(r.consumed);
          break;
        }
        case Section.PART:
        case Section.END: {
          await eio(r.need(4));
          const id = r.be32();
          const h = this.bySectionId.get(id);
          if (!h) throw new LoadError('EINVAL', `Unknown savevm section ${id}`);
          obs?.section?.({ offset, type, id, idstr: h.idstr });
          await runHandler(h, r, RAM_SECTION_VERSION, `error while loading state section id ${id}(${h.idstr})`);
          await checkFooter(r, h, id);
          obs?.sectionEnd?.(r.consumed);
          break;
        }
        case Section.COMMAND:
          if ((await this.processCommand(r, offset)) === 'quit') return;
          break;
        case Section.EOF:
          obs?.eof?.(offset);
          return;
        default:
          throw new LoadError('EINVAL', `Unknown savevm section type ${type}`);
      }
    }
  }

  /** loadvm_process_command(); 'quit' for POSTCOPY_RUN, which leaves every level of loading. */
  private async processCommand(r: StreamReader, offset: number): Promise<'quit' | undefined> {
    const { hooks, observer: obs } = this.opts;
    await eio(r.need(4));
    const cmd = r.be16();
    const len = r.be16();
    const args = activeProfile().stream.commands[cmd];
    if (!args) throw new LoadError('EINVAL', `MIG_CMD 0x${cmd.toString(16)} unknown (len 0x${len.toString(16)})`);
    if (args.len !== -1 && args.len !== len) {
      throw new LoadError('ERANGE', `${args.name} received with bad length - expecting ${args.len}, got ${len}`);
    }
    await eio(r.need(len));
    const payload = r.view(len);
    obs?.command?.(offset, args.name, payload);
    switch (cmd) {
      case Command.OPEN_RETURN_PATH:
        if (!hooks.openReturnPath()) throw new LoadError('EPERM', 'CMD_OPEN_RETURN_PATH failed');
        return;
      case Command.PING: {
        const value = payload.readUInt32BE(0);
        if (!hooks.sendPong(value)) throw new LoadError('EPERM', `CMD_PING (0x${value.toString(16)}) received with no return path`);
        return;
      }
      case Command.POSTCOPY_ADVISE:
        return void this.postcopy.advise(payload);
      case Command.POSTCOPY_RAM_DISCARD:
        return void this.postcopy.discard(payload);
      case Command.POSTCOPY_LISTEN:
        return void this.postcopy.listen();
      case Command.POSTCOPY_RUN:
        this.postcopy.run();
        return 'quit';
      case Command.PACKAGED: {
        // loadvm_handle_cmd_packaged(): a nested stream of `length` bytes, loaded up to its RUN;
        // then the rest of the main stream is read, as the listen thread reads it.
        const length = payload.readUInt32BE(0);
        // QEMU takes up to UINT32_MAX; a package is device state (kilobytes), and what a corrupt
        // stream claims must not be held in memory, so past 256 MiB it is refused in QEMU's words.
        if (length > MAX_PACKAGED) throw new LoadError('EINVAL', `Unreasonably large packaged state: ${length}`);
        const packaged = await eio(r.bytes(length));
        await this.sectionsToEof(new StreamReader(Readable.from([packaged]))); // bytes() gave a copy
        return;
      }
      case Command.RECV_BITMAP:
        return void this.postcopy.recvBitmap(payload);
      case Command.POSTCOPY_RESUME:
        return void this.postcopy.resume();
      case Command.SWITCHOVER_START:
        // loadvm_postcopy_handle_switchover_start(): for the devices that want to know (VFIO);
        // a `-M none` guest has none.
        return;
      case Command.ENABLE_COLO:
        if (!hooks.enableColo) throw new LoadError('ENOTSUP', 'ENABLE_COLO command come in migration stream, but COLO module is not built in');
        // 7.2 learns COLO from this command alone; 8.1 on (migration_incoming_enable_colo()) the
        // destination must have asked for x-colo itself.
        if (activeProfile().stream.enableColoNeedsXColo && !hooks.xColo?.()) {
          throw new LoadError('EINVAL', 'ENABLE_COLO command come in migration stream, but x-colo capability is not set');
        }
        hooks.enableColo();
        return;
      default:
        throw new LoadError('EPERM', `CMD_${args.name} in wrong postcopy state (0)`);
    }
  }
}

/** A LoadError learns where it was found (and how long a stream that ended early was). */
function located(err: unknown, r: StreamReader): unknown {
  if (err instanceof LoadError) {
    err.offset ??= r.consumed;
    if (err.early && r.exhausted) err.streamEnd = r.consumed + r.available;
  }
  return err;
}

/** `capability` undefined: no capability is checked. Returns the capabilities the stream names. */
async function loadHeader(r: StreamReader, machine: string | undefined, obs: LoadObserver | undefined, capability?: (name: string) => boolean): Promise<Set<string>> {
  await r.need(8);
  if (r.be32() !== VM_FILE_MAGIC) throw new LoadError('EINVAL', 'Not a migration stream');
  const version = r.be32();
  if (version === VM_FILE_VERSION_COMPAT) throw new LoadError('ENOTSUP', "SaveVM v2 format is obsolete and don't work anymore");
  if (version !== VM_FILE_VERSION) throw new LoadError('ENOTSUP', 'Unsupported migration stream version');
  obs?.header?.(version);
  await r.need(1);
  if (r.u8() !== Section.CONFIGURATION) throw new LoadError('EINVAL', 'Configuration section missing');
  await r.need(4);
  const len = r.be32();
  if (len > 256) throw new LoadError('EINVAL', `Machine type received is too long (${len} bytes)`);
  const name = (await r.bytes(len)).toString('latin1');
  // strncmp over the sender's length, as configuration_post_load(): a prefix passes.
  if (machine !== undefined && (name !== machine.slice(0, len) || len === 0)) {
    throw new LoadError('EINVAL', `Machine type received is '${name}' and local is '${machine}'`);
  }
  obs?.configuration?.(name);
  const received = await loadConfigurationSubsections(r);
  // configuration_validate_capabilities(): each one that differs is reported, then one failure.
  const lines: string[] = [];
  for (const cap of capability ? activeProfile().stream.validatedCapabilities : []) {
    const ours = capability!(cap);
    const theirs = received.has(cap);
    if (ours !== theirs) lines.push(`Capability ${cap} is ${ours ? 'on' : 'off'}, but received capability is ${theirs ? 'on' : 'off'}`);
  }
  if (lines.length) throw new LoadError('EINVAL', ...lines);
  return received;
}

/**
 * configuration/target-page-bits, /capabilities and /uuid, when a source sends them. Whether one
 * follows is decided on a peek at the next byte, which atEnd() has made ready (not merely
 * buffered: the byte after the machine name is often the first of a new chunk).
 */
async function loadConfigurationSubsections(r: StreamReader): Promise<Set<string>> {
  const received = new Set<string>();
  while (!(await r.atEnd())) {
    if (r.peekU8() !== Section.SUBSECTION) return received;
    r.u8();
    const name = (await r.countedString()) ?? '';
    await r.need(4);
    r.be32(); // version
    if (name === 'configuration/target-page-bits') {
      await r.need(4);
      const bits = r.be32();
      if (bits !== 12) throw new LoadError('EINVAL', `Received TARGET_PAGE_BITS is ${bits} but local is 12`);
    } else if (name === 'configuration/capabilities') {
      await r.need(4);
      const count = r.be32();
      for (let i = 0; i < count; i++) {
        const cap = await r.countedString();
        if (cap !== undefined) received.add(cap);
      }
    } else if (name === 'configuration/uuid') {
      await r.skip(16);
    } else {
      throw new LoadError('EINVAL', `Unknown subsection '${name}' of configuration`);
    }
  }
  return received;
}

async function runHandler(h: Handler, r: StreamReader, version: number, context: string): Promise<void> {
  try {
    if (version < h.minVersion) throw new LoadError('EINVAL', `${h.idstr}: incoming version_id ${version} is too old for local minimum version_id ${h.minVersion}`);
    await h.load(r, version);
  } catch (err) {
    if (err instanceof LoadError) throw err.wrap(context);
    if (err instanceof StreamEnded) throw LoadError.endedEarly('EIO', context);
    throw err;
  }
}

/** check_section_footer() */
async function checkFooter(r: StreamReader, h: Handler, id: number): Promise<void> {
  const mark = await readOr(r, 1, () => r.u8());
  if (mark !== Section.FOOTER) throw new LoadError('EINVAL', `Missing section footer for ${h.idstr}`);
  await eio(r.need(4));
  const got = r.be32();
  if (got !== id) {
    throw new LoadError('EINVAL', `Mismatched section id in footer for ${h.idstr} - read 0x${got.toString(16)} expected 0x${id.toString(16)}`);
  }
}

/** An end of stream inside a structure is an I/O error (the QEMUFile error is -EIO). */
async function eio<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof StreamEnded) throw LoadError.endedEarly('EIO');
    throw err;
  }
}

async function readOr<T>(r: StreamReader, n: number, read: () => T): Promise<T> {
  await eio(r.need(n));
  return read();
}
