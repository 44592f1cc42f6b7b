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
}
