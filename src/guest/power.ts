/**
 * The machine's power button and reset line, and the guest OS's answer to them, as QEMU 7.2's
 * main loop runs them (softmmu/runstate.c: qemu_system_powerdown_request, qemu_system_reset,
 * main_loop_should_exit):
 *
 * - system_powerdown sends POWERDOWN. On a machine with ACPI the emulated guest OS powers off a
 *   moment later, once it runs (a paused guest answers when it is continued): SHUTDOWN
 *   {guest: true, reason: guest-shutdown}, then with -no-shutdown the guest stops in run state
 *   `shutdown` (cont refuses until a reset), else the process ends, as QEMU's does.
 * - system_reset sends RESET {guest: false, reason}; a guest that was not running is left in
 *   `prelaunch` (so a shut-down guest can be continued again).
 */
import type { RunStateMachine } from './run-state.js';

/** How long the emulated guest OS takes to power off after the button. */
export const GUEST_POWEROFF_MS = 100;

export interface PowerOptions {
  runState: RunStateMachine;
  /** The machine has ACPI, so a guest OS sees the button. */
  acpi: () => boolean;
  /** -no-shutdown: a guest that powers off stops instead of ending the process. */
  noShutdown: () => boolean;
  emit: (event: 'POWERDOWN' | 'RESET' | 'SHUTDOWN', data?: { guest: boolean; reason: string }) => void;
  /** The process ends after the guest powered off (QEMU's exit from its main loop). */
  exit: () => void;
}

export class Power {
  /** The button was pressed and the guest OS has not yet answered. */
  private pending = false;
  private timer?: NodeJS.Timeout;

  constructor(private readonly opts: PowerOptions) {
    opts.runState.onEvent((event) => {
      if (event === 'RESUME' && this.pending) this.schedule();
      if (event === 'STOP') this.cancel();
    });
  }

  /** qmp_system_powerdown() */
  pressPowerButton(): void {
    this.opts.emit('POWERDOWN');
    if (!this.opts.acpi()) return;
    this.pending = true;
    if (this.opts.runState.running) this.schedule();
  }

  /** qemu_system_reset(): the guest starts over; a button press not yet answered is forgotten. */
  reset(reason: string): void {
    this.pending = false;
    this.cancel();
    this.opts.emit('RESET', { guest: false, reason });
    const { runState } = this.opts;
    if (!['running', 'inmigrate', 'finish-migrate'].includes(runState.state)) runState.set('prelaunch');
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      if (this.opts.runState.running) this.powerOff();
    }, GUEST_POWEROFF_MS);
  }

  private cancel(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The guest OS powers the machine off. */
  private powerOff(): void {
    this.pending = false;
    this.opts.emit('SHUTDOWN', { guest: true, reason: 'guest-shutdown' });
    if (this.opts.noShutdown()) this.opts.runState.stop('shutdown');
    else this.opts.exit();
  }
}
