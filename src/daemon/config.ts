/** The daemon's settings, as a command line gives them (src/cli/main.ts, or QEMU's: src/cli/qemu/). */
import type { CpuTopology } from '../guest/cpu-topology.js';
import type { Accelerator } from '../guest/machines.js';
import type { MigrationGlobals } from '../migration/globals.js';
import type { Sandbox } from '../cli/sandbox.js';
import type { WorkloadPattern } from '../guest/workload.js';
import type { FaultSpec } from '../faults/faults.js';
import type { HugePageAdvice } from '../native/ram-advice.js';
import type { ProfileId } from '../profiles/index.js';
import type { QmpSpec } from '../qmp/transports/spec.js';

export interface DaemonConfig {
  /** The QEMU release the daemon is (src/profiles). */
  qemuVersion: ProfileId;
  qmp: QmpSpec[];
  memoryBytes: number;
  ramId: string;
  memoryFile?: string;
  /** memoryFile is the RAM itself, mapped shared (memory-backend-file share=on), not its first contents. */
  memoryShare: boolean;
  /** -mem-prealloc: fault every RAM page in at start-up. */
  memPrealloc: boolean;
  /** Transparent huge pages for guest RAM: madvise'd on (as QEMU), off, or left to the kernel. */
  ramHugePages: HugePageAdvice;
  /** Faults armed before the first byte (--fault, --faults; src/faults). */
  faults: FaultSpec[];
  /** Plain outgoing migrations move their pages on a thread of their own (src/migration/ram/page-thread.ts). */
  pageThread: boolean;
  machine: string;
  /**
   * The migration object's properties that change the stream: the release's, as the machine
   * type's compat sets them (when `machine` is one of the release's types), and -global's.
   */
  migrationGlobals: MigrationGlobals;
  incoming?: string;
  /** -S: the guest does not start by itself (QEMU's autostart off). */
  paused: boolean;
  /** The workload at start: bytes per second dirtied while the guest runs, and the pattern. */
  dirtyRate: number;
  dirtyPattern: WorkloadPattern;
  /** Hash RAM at every COLO checkpoint (for tests and audits; costs pause time). */
  coloCheckpointDigest: boolean;
  /** Fail over by itself this long after losing the COLO peer; 0 waits for x-colo-lost-heartbeat. */
  coloHeartbeatTimeoutMs: number;
  name?: string;
  /** -uuid: the guest's UUID (query-uuid); all zeros without one, as in QEMU. */
  uuid: string;
  /** The guest's vCPUs (query-cpus-fast, HMP's cpu-index): -M none has none. */
  cpus: CpuTopology;
  /** The accelerator QEMU would run the guest with (query-kvm); qmigd runs no guest code either way. */
  accelerator: Accelerator;
  /** The machine answers its ACPI power button (system_powerdown) by shutting the guest down. */
  acpi: boolean;
  /** -no-shutdown: a guest that shuts down stops (run state shutdown); else the process ends. */
  noShutdown: boolean;
  logLevel: string;
  pidfile?: string;
  /** -sandbox: what the daemon refuses to do on a client's behalf. */
  sandbox: Sandbox;
  /** Serve the commands that break the daemon on purpose (x-qmigd-test-hook). */
  testHooks: boolean;
  /** Bytes all QMP connections together may hold before the greediest is dropped. */
  qmpMemoryLimit: number;
  /** Check replies and events against their schemas (QMIGD_VALIDATE=1; the tests set it). */
  validate: boolean;
}
