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
}
