/**
 * The emulated machine: one RAM block, its run state, the workload that dirties RAM while it
 * runs, and QEMU's `autostart` (whether an incoming guest starts once it has arrived: off with
 * -S, and toggled by stop/cont while the guest waits for its migration).
 */
import { Power, type PowerOptions } from './power.js';
import { GuestRam } from './ram.js';
import { RunStateMachine } from './run-state.js';
import { GuestOutput } from './output.js';
import { Workload } from './workload.js';

export class Guest {
  readonly ram: GuestRam;
  readonly runState: RunStateMachine;
  readonly workload: Workload;
  /** Network output, compared between COLO replicas. */
  readonly output: GuestOutput;
  /** The power button and reset line, and the guest OS's answer to them. */
  readonly power: Power;
  autostart: boolean;

  /** `sharedFile`: the RAM is that file, mapped shared (GuestRam.sharedFile). */
  constructor(opts: { ramId: string; memoryBytes: number; sharedFile?: string; incoming: boolean; autostart: boolean; power: Omit<PowerOptions, 'runState'> }) {
    this.ram = opts.sharedFile ? GuestRam.sharedFile(opts.ramId, opts.memoryBytes, opts.sharedFile) : new GuestRam(opts.ramId, opts.memoryBytes);
    this.runState = new RunStateMachine(opts.incoming ? 'inmigrate' : 'prelaunch');
    this.workload = new Workload(this.ram, () => this.runState.running);
    this.output = new GuestOutput(() => this.runState.running);
    this.power = new Power({ ...opts.power, runState: this.runState });
    this.autostart = opts.autostart;
  }
}
