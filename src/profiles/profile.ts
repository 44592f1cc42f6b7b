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
export type ProfileId = '7.2' | '10.0';

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
  /** Differences in what QMP commands answer. */
  readonly qmp: {
    /** query-status carries `singlestep` (always false: qmigd runs no guest code). */
    readonly statusSinglestep: boolean;
  };
  /** Differences in the migration stream and its return path (savevm.c, global_state.c). */
  readonly stream: StreamProfile;
  /** Differences in the source's pre-copy state machine (migration.c). */
  readonly precopy: {
    /**
     * migration_switchover_prepare() (9.1+): the switchover goes through `device` even without
     * pause-before-switchover (active → device → completed); 7.2 goes active → completed.
     */
    readonly deviceWithoutPause: boolean;
  };
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
  /** The source sends MIG_CMD_SWITCHOVER_START once the guest is stopped for the last pass (9.2+). */
  readonly switchoverStart: boolean;
  /** Section ids a `-M none` source gives its devices: the order they registered in. */
  readonly sectionIds: { readonly timer: number; readonly ram: number; readonly globalstate: number };
  /**
   * globalstate's 100 bytes after `size`: the run state's name in `runstateBytes` (100 in 7.2;
   * 32 in 9.0+, then has_vm_was_suspended, vm_was_suspended and 66 unused bytes).
   */
  readonly globalState: { readonly runstateBytes: number; readonly suspendFlags: boolean };
  /** The VM description opens with the configuration section's description (9.0+). */
  readonly vmDescriptionConfiguration: boolean;
  /** Return-path messages this release knows: types below this are valid (MIG_RP_MSG_MAX). */
  readonly rpMessageMax: number;
  /** `file:PATH[,offset=N]` migration URIs (8.2+). */
  readonly fileUri: boolean;
}
