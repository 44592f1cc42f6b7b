/** The daemon's settings, as the command line gives them (see src/cli/serve.ts). */
import type { QmpSpec } from '../qmp/transports/spec.js';

export interface DaemonConfig {
  qmp: QmpSpec[];
  memoryBytes: number;
  ramId: string;
  memoryFile?: string;
  machine: string;
  incoming?: string;
  paused: boolean;
  name?: string;
  logLevel: string;
  pidfile?: string;
  /** Check replies and events against their schemas (QMIGD_VALIDATE=1; the tests set it). */
  validate: boolean;
}
