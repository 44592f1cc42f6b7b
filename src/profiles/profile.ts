/**
 * A version profile: everything that differs between the QEMU releases qmigd can be, as data in
 * one place (src/profiles/qemu-*.ts). One daemon is one release for its whole life, as a QEMU
 * binary is, so the profile is chosen once at start-up (--qemu-version, or qmigd-qemu's name)
 * and read where a difference matters through activeProfile().
 *
 * What a profile holds:
 * - the version a greeting and query-version report, and what `-version` prints;
 * - its schema: schema/ is QEMU 7.2's, and a later release's differences are an overlay
 *   directory (schema/qemu-X.Y/, see schema/README.md) merged over it;
 * - the texts of errors that changed (Errors reads them from here);
 * - the migration capabilities and parameters, their defaults and checks;
 * - the differences of the state machines and of the migration stream.
 */
import type { OptionTable } from '../cli/qemu/option-table.js';
import type { SmpLevel } from '../guest/cpu-topology.js';
import type { MachineType } from '../guest/machines.js';
import type { RunState } from '../guest/run-state.js';

export type ProfileId = '7.2' | '10.0';

/** The `zero-page-detection` migration parameter's values (9.0+). */
export type ZeroPageDetection = 'none' | 'legacy' | 'multifd';

/** How a release does multifd (migration/multifd*.c, ram.c), NOCOMP over sockets. */
export interface MultifdProfile {
  /**
   * How the destination tells the main channel from the multifd channels: `first` (7.2: the
   * first connection is the main one) or `magic` (8.0+: each connection's first four bytes, QEVM
   * for the main channel, so the connections may come in any order, as 10.0's do).
   */
  readonly channelOrder: 'first' | 'magic';
  /** The RAM flag 0x200 (MULTIFD_FLUSH) exists: 7.2 refuses it as an unknown flag. */
  readonly flushRecord: boolean;
  /** Packets carry zero pages (9.0+): be32 zero_pages at byte 32, their offsets after the normal pages'. */
  readonly zeroPages: boolean;
  /** A SYNC packet is a bare header (9.0+: pages_alloc 0, no block); 7.2 fills it as a data packet. */
  readonly bareSync: boolean;
  /** MULTIFD_FLAG_COMPRESSION_MASK: 3 bits in 7.2, 5 in 10.0 (QPL, UADK, QATzip). */
  readonly compressionMask: number;
  /**
   * 9.0+ checks the compression bits in the NOCOMP receive method, so only for a packet with
   * pages and after its offsets; 7.2 checks them first, in every packet.
   */
  readonly compressionCheckedWithPages: boolean;
  /** MULTIFD_FLAG_DEVICE_STATE (0x40, 10.0): a 276-byte device-state header instead of a RAM one. */
  readonly deviceStatePackets: boolean;
  /** The channels' 64-byte greetings count in multifd-bytes (and transferred), as 10.0 counts them; 7.2 does not. */
  readonly greetingCounted: boolean;
  /** A failed incoming migration also reports the error a channel failed with, last (10.0); 7.2 does not. */
  readonly channelErrorReported: boolean;
  /** A bad channel greeting fails the incoming migration and exits (10.0's exit-on-error); 7.2 closes the channel. */
  readonly badChannelIsFatal: boolean;
  /** The receiver's texts that changed (multifd_recv_initial_packet, multifd_recv_unfill_packet). */
  readonly texts: {
    channelIdTooBig(id: number, channels: number): string;
    packetMagic(got: string, want: string): string;
    packetVersion(got: number, want: number): string;
    pagesAlloc(got: number, max: number): string;
    normalPages(got: number, max: number): string;
    zeroPages(got: number, max: number): string;
    compression(channel: number, flags: number): string;
    emptyDeviceState: string;
  };
}

export interface QemuProfile {
  readonly id: ProfileId;
  readonly version: { readonly major: number; readonly minor: number; readonly micro: number };
  /** The `-version` banner's copyright line. */
  readonly copyright: string;
  /** Directory under schema/ merged over the base schema (QEMU 7.2's); none for 7.2 itself. */
  readonly schemaOverlay?: string;
  /**
   * Whether every point of the release is modelled and verified against its QEMU; the default
   * profile is the newest complete one.
   */
  readonly complete: boolean;
  /**
   * Directory under data/ with what the release answers about its QOM types, QOM paths and
   * command-line options, captured from the real binary (test/fixtures/capture-qemu-data.ts).
   */
  readonly dataDir: string;
  /** The machine types qmigd can be, as the release's query-machines lists them. */
  readonly machines: readonly MachineType[];
  /** -smp: the levels of a PC's CPU hierarchy, outermost first (its errors name them so). */
  readonly smp: {
    readonly levels: readonly SmpLevel[];
    /** Levels -smp takes for other targets' machines: more than one is refused on a PC. */
    readonly foreignLevels: readonly string[];
    /** That refusal, %s the level. */
    readonly foreignLevelError: string;
  };
  /**
   * The KVM module's own complaint (no /dev/kvm) goes through error_report(), with the program's
   * name and the option's location, instead of a bare fprintf (7.2).
   */
  readonly kvmModuleErrorReported: boolean;
  /** The start of -machine's refusal of a type the release lacks, %s the type. */
  readonly unsupportedMachine: string;
  /** qemu-system-x86_64's options (qmigd-qemu accepts exactly these). */
  readonly options: OptionTable;
  /** Differences in what QMP commands answer. */
  readonly qmp: {
    /** query-status carries `singlestep` (always false: qmigd runs no guest code). */
    readonly statusSinglestep: boolean;
    /** query-machines says whether each machine has ACPI (MachineInfo's `acpi`). */
    readonly machineInfoAcpi: boolean;
  };
  /** The migration interface: capabilities, parameters and the commands' checks (src/migration/params.ts). */
  readonly migration: MigrationProfile;
  /** Error texts that changed between releases; src/errors.ts reads them from here. */
  readonly errors: ProfileErrors;
  /** What HMP prints that changed (src/commands/hmp-migration.ts). */
  readonly hmp: ProfileHmp;
  /**
   * The migration object's properties that change the stream (src/migration/globals.ts): what
   * they are without a machine type's compat or -global, which a -global may set, and the
   * machine types' compat (hw_compat_X_Y).
   */
  readonly migrationGlobals: MigrationGlobalsProfile;
  /** Multifd's wire format and rules (src/migration/multifd). */
  readonly multifd: MultifdProfile;
  /** Differences in the migration stream and its return path (savevm.c, global_state.c). */
  readonly stream: StreamProfile;
  /** Run-state transitions the release allows beyond 7.2's table (runstate_transitions_def). */
  readonly extraRunStateTransitions: Partial<Record<RunState, readonly RunState[]>>;
  /** Differences in the source's pre-copy state machine (migration.c). */
  readonly precopy: {
    /**
     * migration_switchover_prepare() (9.1+): the switchover goes through `device` even without
     * pause-before-switchover (active → device → completed); 7.2 goes active → completed.
     */
    readonly deviceWithoutPause: boolean;
    /**
     * The state migration_completion() moves to `colo` when x-colo is on; from any other the
     * migration completes. 7.2: `active`, so with pause-before-switchover (which passes through
     * `device`) COLO is never entered. 10.0.13: `device`, which every switchover passes through
     * (the stable fix 0b5bf4ea76 for "migration: Always set DEVICE state", which had made
     * 10.0.0 never enter COLO). Both observed with two real QEMUs.
     */
    readonly coloFrom: 'active' | 'device';
    /**
     * A failure inside migration_completion() (a write that fails once the guest is stopped, the
     * return path's end) gives an error-desc: 7.2's `fail:` only sets the state (failed, no
     * error-desc); 8.2+ reports the channel's error there unless one is already set. Both
     * observed with a real QEMU whose destination died in pre-switchover.
     */
    readonly completionErrorReported: boolean;
  };
  readonly postcopy: {
    /**
     * The state postcopy_start() leaves `active` for: 7.2 `postcopy-active` at once (and
     * pause-before-switchover returns to it); 10.0 `device` while the guest stops and the
     * package goes, then `postcopy-active`. Both observed with two real QEMUs.
     */
    readonly switchoverState: 'postcopy-active' | 'device';
    /**
     * migrate with resume: 9.0+ goes `postcopy-recover-setup` at once (back to paused if the
     * connection fails), then `postcopy-recover` once connected; 7.2 stays paused until then.
     */
    readonly resumeSetupState: boolean;
    /**
     * migrate_cancel in a postcopy state: 10.0 refuses it ("Postcopy migration in progress,
     * cannot cancel."); 7.2 cancels a running one (the guest stays stopped: it runs on the
     * destination), but one paused stays in `cancelling`, as its thread waits for a resume that
     * cancel does not give. Both observed with real QEMUs.
     */
    readonly cancel: 'refused' | 'stuck-when-paused';
    /** The states migrate-pause breaks the channel in (on either side): 10.0 adds postcopy-recover. */
    readonly pauseFrom: readonly string[];
    /**
     * A channel that fails during the recovery handshake: 8.2+ pauses both sides again; 7.2's
     * source stays in postcopy-recover for good (its return-path thread pauses without waking
     * the migration thread) and its destination crashes (SIGSEGV). Both seen with QEMU 7.2.
     */
    readonly failedRecovery: 'pauses' | 'source-stuck-destination-crashes';
    /**
     * query-migrate's `downtime`: 7.2 measures it at the switch (postcopy_start(); when that took
     * 0 ms, completion falls back to a downtime_start never set, and reports the monotonic clock);
     * 10.0 from the switch to completion, and shows it (0 until then) in every postcopy state in
     * place of expected-downtime. Both seen with real QEMUs.
     */
    readonly downtime: 'at-switch' | 'until-completion';
  };
}

/** A parameter's value as qmigd keeps it: uint64 and size values as bigints. */
export type ParameterValue = number | bigint | boolean | string;

/**
 * One of migrate_params_check()'s checks, in QEMU's order: `fails` tells whether the merged set
 * breaks it; the error is "Parameter 'NAME' expects EXPECTS" (QERR_INVALID_PARAMETER_VALUE), or
 * `message` verbatim where QEMU words it otherwise.
 */
export interface ParameterCheck {
  readonly fails: (p: Readonly<Record<string, ParameterValue | undefined>>, caps: Readonly<Record<string, boolean>>) => boolean;
  readonly name?: string;
  readonly expects?: string;
  readonly message?: string;
}

/** One of migrate_caps_check()'s refusals, in QEMU's order, with its message. */
export interface CapabilityCheck {
  /** `params`: the current parameters, which some checks read (zero copy and compression). */
  readonly fails: (
    caps: Readonly<Record<string, boolean>>,
    old: Readonly<Record<string, boolean>>,
    params: Readonly<Record<string, ParameterValue | undefined>>,
  ) => boolean;
  readonly message: string;
}

export interface MigrationProfile {
  /** Every capability, in QAPI order (query-migrate-capabilities and HMP list them so). */
  readonly capabilities: readonly string[];
  /** Those qmigd honours; turning another on is refused with qmigd's not-implemented error. */
  readonly implementedCapabilities: readonly string[];
  /** Every parameter with its default, in QAPI member order. */
  readonly parameterDefaults: Readonly<Record<string, ParameterValue>>;
  /** Parameters whose values other than the default qmigd cannot honour (refused like capabilities). */
  readonly unimplementedParameterValues: Readonly<Record<string, ParameterValue>>;
  /** The parameters QAPI types `size` or `uint64` (kept as bigints). */
  readonly uint64Parameters: readonly string[];
  readonly capabilityChecks: readonly CapabilityCheck[];
  readonly parameterChecks: readonly ParameterCheck[];
  /** URI schemes `migrate` and `migrate-incoming` know (file: from 8.2). */
  readonly uriSchemes: readonly string[];
  /**
   * Since 8.2 (qmp_migrate → migrate_uri_parse before migrate_prepare) a bad URI is refused
   * before the state leaves none; 7.2 parses it after migrate_init() and ends in failed.
   */
  readonly uriParsedBeforeSetup: boolean;
  /**
   * migration_incoming_state_setup() (8.2 on): migrate-incoming moves the destination's state
   * from none to setup (announced as any change is, with `events`) once its URI is good; 7.2
   * announced setup unconditionally first and left the state at none until a connection came.
   */
  readonly incomingEntersSetup: boolean;
  /** MigrationStats members the release no longer reports (9.1 dropped `skipped`, always 0). */
  readonly ramStatsDropped: readonly string[];
  /**
   * What MigrationStats' `transferred` counts. `ram-records` (7.2): the bytes ram.c accounts
   * with ram_transferred_add() (page records and each iteration's EOS) plus multifd's, so not
   * the section framing, the device state or the VM description. `stream` (8.1+,
   * migration_transferred_bytes()): every byte the main channel carried (qemu_file_transferred)
   * plus multifd-bytes, so at the end the whole stream. precopy-bytes and downtime-bytes still
   * count what ram_transferred_add() counts in both.
   */
  readonly ramTransferred: 'ram-records' | 'stream';
  /** `migrate -b/-i` (blk, inc) exist (removed in 9.1). */
  readonly blockMigrationOptions: boolean;
  /**
   * Capabilities that need a seekable transport (migration_needs_seekable_channel(), 9.0+:
   * mapped-ram writes pages at fixed offsets); `migrate` and `migrate-incoming` refuse other URIs.
   */
  readonly seekableCapabilities: readonly string[];
  /**
   * Capabilities that need several connections (migration_needs_multiple_sockets(), 8.2+):
   * refused up front on a transport that has them not (only tcp and unix, and file: with
   * mapped-ram); 7.2 has no such check and fails once the migration is set up.
   */
  readonly multiChannelCapabilities: readonly string[];
}

export interface ProfileErrors {
  /** migrate-pause outside postcopy. */
  readonly migratePauseNotPostcopy: string;
  /** x-colo-lost-heartbeat outside COLO. */
  readonly coloNotEnabled: string;
  /** A URI with an unknown scheme, on `migrate` (migrate-incoming always said unknown migration protocol). */
  readonly migrateUnknownProtocol: (uri: string) => string;
  /** file_ram_alloc(): a shared memory-backend-file shorter than the RAM (sizes in hex). */
  readonly backingStoreTooSmall: (id: string, fileSize: string, size: string) => string;
  /** A bad page request on the return path (migrate_handle_rp_req_pages(), ram_save_queue_pages()); hex without 0x. */
  readonly reqPages: {
    readonly misaligned: (start: string, len: number) => string;
    readonly noPreviousBlock: string;
    readonly noBlock: (name: string) => string;
    readonly overrun: (start: string, len: string, blocklen: string) => string;
  };
  /** A recovery's bad received bitmap or resume ack on the return path (ram_dirty_bitmap_reload(), ...); hex without 0x. */
  readonly recovery: {
    readonly invalidBlock: (name: string) => string;
    readonly sizeMismatch: (name: string, size: string, local: string) => string;
    readonly endMark: (name: string, mark: string) => string;
    readonly resumeAck: (value: number) => string;
  };
}

export interface ProfileHmp {
  /** migration_global_dump(): the migration object's properties, as this daemon has them. */
  readonly migrateGlobals: (globals: MigrationGlobals) => string;
  /** `migrate`'s args_type, params and help. */
  readonly migrate: { readonly argsType: string; readonly params: string; readonly help: string };
  /** hmp_info_migrate_parameters(): [parameter, unit] in the order printed. */
  readonly parameterLines: ReadonlyArray<readonly [string, string]>;
}

/** A MIG_CMD as mig_cmd_args[] describes it: its name in messages and its payload length (-1: any). */
export interface MigCommandArgs {
  readonly name: string;
  readonly len: number;
}

export interface StreamProfile {
  /**
   * The MIG_CMDs this release's destination knows (mig_cmd_args[]); any other is
   * "MIG_CMD 0x.. unknown". Whether it can act on one is the loader's business.
   */
  readonly commands: Readonly<Record<number, MigCommandArgs>>;
  /** Section ids a `-M none` source gives its devices: the order they registered in. */
  readonly sectionIds: { readonly timer: number; readonly ram: number; readonly globalstate: number };
  /**
   * globalstate's 100 bytes after `size`: the run state's name in `runstateBytes` (100 in 7.2;
   * 32 in 9.0+, then has_vm_was_suspended, vm_was_suspended and 66 unused bytes). With
   * `suspendFlags` a guest that was suspended (flag or state) resumes into `suspended` (9.0+).
   */
  readonly globalState: { readonly runstateBytes: number; readonly suspendFlags: boolean };
  /** The VM description opens with the configuration section's description (9.0+). */
  readonly vmDescriptionConfiguration: boolean;
  /** Return-path messages this release knows: types below this are valid (MIG_RP_MSG_MAX). */
  readonly rpMessageMax: number;
  /**
   * What a failure of the source's return-path thread does. 'closes-channel' (7.2): it is only
   * logged ("RP: ..."), and the thread's qemu_fclose() closes the connection it shares with the
   * main channel, so a write still to come fails with EBADF; otherwise the migration fails at
   * completion without error-desc. 'error-desc' (8.2+): the thread's Error, its text without
   * "RP: ", becomes the error-desc unless the migration has one already (a read that meets the
   * end: "Channel error: Input/output error").
   */
  readonly rpFailure: 'closes-channel' | 'error-desc';
  /** ENABLE_COLO is refused unless the destination has x-colo on (8.1+). */
  readonly enableColoNeedsXColo: boolean;
  /**
   * should_validate_capability(): the capabilities the configuration section carries (its
   * configuration/capabilities subsection, when one is on) and the destination requires to match.
   */
  readonly validatedCapabilities: readonly string[];
  /**
   * A stream that ends at or inside a RAM record's header, as ram_load_precopy() reports it: 7.2
   * reads the missing bytes as zeros and fails on the flags they make (EINVAL); 10.0 checks the
   * file's error after reading the header (EIO). Inside a page's bytes both fail with EIO. Seen
   * with both real QEMUs fed cut streams (test/integration/qemu-faults-interop.test.ts,
   * test/integration/migration-stream.test.ts).
   */
  readonly ramStreamEnd: { readonly errno: 'EINVAL' | 'EIO'; readonly line: string };
}

/**
 * The migration object's properties (migration_properties[], options.c) that change what goes on
 * the wire, as the migration code reads them. A release that lacks one behaves as its value says.
 */
export interface MigrationGlobals {
  /** MIG_CMD_SWITCHOVER_START once the guest is stopped for the last pass (9.2+; 7.2 never). */
  readonly 'send-switchover-start': boolean;
  /**
   * Multifd syncs its channels at every RAM EOS, with no MULTIFD_FLUSH record (7.2's only way);
   * off (8.1+'s default): after the setup and at every pass over RAM, each announced on the
   * main stream by RAM_SAVE_FLAG_MULTIFD_FLUSH. Source and destination must agree.
   */
  readonly 'multifd-flush-after-each-section': boolean;
  /** The zero-page-detection parameter's starting value (9.0+; 7.2 detects zero pages as `legacy`). */
  readonly 'zero-page-detection': ZeroPageDetection;
  /**
   * postcopy-preempt's second connection, which carries the pages the destination asks for: on
   * (7.2's only way), it connects with the migration (and again as a recovery connects) and ends
   * with an EOS; off (8.0+), it connects as postcopy starts (and in a recovery, before RESUME)
   * and just closes (postcopy_preempt_establish_channel()).
   */
  readonly 'x-preempt-pre-7-2': boolean;
}

/** hw_compat_X_Y's entries for the migration object: what machine types up to `upTo` set. */
export interface MachineCompat {
  readonly upTo: string;
  readonly set: Partial<MigrationGlobals>;
}

export interface MigrationGlobalsProfile {
  /** -M none's values, and the newest machine types'. */
  readonly defaults: MigrationGlobals;
  /** Those `-global migration.NAME=VALUE` may set: the release has them (7.2 has none). */
  readonly settable: ReadonlyArray<keyof MigrationGlobals>;
  /** Newest first; a machine type gets every entry whose `upTo` is its version or later. */
  readonly compat: readonly MachineCompat[];
}
