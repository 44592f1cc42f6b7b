/**
 * The guest's run state, with QEMU 7.2's table of allowed transitions (softmmu/runstate.c) and
 * the vm_stop()/vm_start() rules that decide when STOP and RESUME are announced.
 */
import { activeProfile } from '../profiles/index.js';

export type RunState =
  | 'debug' | 'inmigrate' | 'internal-error' | 'io-error' | 'paused' | 'postmigrate' | 'prelaunch'
  | 'finish-migrate' | 'restore-vm' | 'running' | 'save-vm' | 'shutdown' | 'suspended' | 'watchdog'
  | 'guest-panicked' | 'colo';

const TRANSITIONS: Record<RunState, RunState[]> = {
  debug: ['running', 'finish-migrate', 'prelaunch', 'suspended'],
  inmigrate: ['internal-error', 'io-error', 'paused', 'running', 'shutdown', 'suspended', 'watchdog',
    'guest-panicked', 'finish-migrate', 'prelaunch', 'postmigrate', 'colo'],
  'internal-error': ['paused', 'finish-migrate', 'prelaunch'],
  'io-error': ['running', 'finish-migrate', 'prelaunch'],
  paused: ['running', 'finish-migrate', 'postmigrate', 'prelaunch', 'colo'],
  postmigrate: ['running', 'finish-migrate', 'prelaunch'],
  prelaunch: ['running', 'finish-migrate', 'inmigrate'],
  'finish-migrate': ['running', 'paused', 'postmigrate', 'prelaunch', 'colo'],
  'restore-vm': ['running', 'prelaunch'],
  colo: ['running', 'prelaunch', 'shutdown'],
  running: ['debug', 'internal-error', 'io-error', 'paused', 'finish-migrate', 'restore-vm', 'save-vm',
    'shutdown', 'watchdog', 'guest-panicked', 'colo', 'suspended'],
  'save-vm': ['running'],
  shutdown: ['paused', 'finish-migrate', 'prelaunch', 'colo'],
  suspended: ['running', 'finish-migrate', 'prelaunch', 'colo'],
  watchdog: ['running', 'finish-migrate', 'prelaunch', 'colo'],
  'guest-panicked': ['running', 'finish-migrate', 'prelaunch'],
};

/** Every run state name, in QAPI order. */
export const RUN_STATES = Object.keys(TRANSITIONS) as RunState[];

export type RunStateEvent = 'STOP' | 'RESUME';

export class RunStateMachine {
  private current: RunState;
  /**
   * vm_was_suspended (9.0+): the guest was suspended to RAM when it stopped, so the next start
   * resumes it into `suspended`, not `running`. Only an incoming stream sets it here (qmigd's
   * own guests cannot suspend).
   */
  resumeSuspended = false;
  private readonly listeners = new Set<(event: RunStateEvent) => void>();

  constructor(initial: RunState) {
    this.current = initial;
  }

  get state(): RunState {
    return this.current;
  }

  get running(): boolean {
    return this.current === 'running';
  }

  /** STOP and RESUME as vm_stop() and vm_start() announce them. */
  onEvent(listener: (event: RunStateEvent) => void): void {
    this.listeners.add(listener);
  }

  /** runstate_set(): QEMU aborts on a transition its table lacks; here it is a bug we report. */
  set(next: RunState): void {
    if (next === this.current) return;
    if (!TRANSITIONS[this.current].includes(next) && !activeProfile().extraRunStateTransitions[this.current]?.includes(next)) {
      throw new Error(`invalid runstate transition: '${this.current}' -> '${next}'`);
    }
    this.current = next;
  }

  /** vm_stop(): only a running guest stops (and says STOP); otherwise nothing changes. */
  stop(next: RunState = 'paused'): boolean {
    if (!this.running) return false;
    this.set(next);
    this.announce('STOP');
    return true;
  }

  /** vm_start(): RESUME is announced before the state changes; a running guest is left alone. */
  start(): boolean {
    if (this.running) return false;
    this.announce('RESUME');
    this.set(this.resumeSuspended ? 'suspended' : 'running');
    this.resumeSuspended = false;
    return true;
  }

  /** runstate_needs_reset() */
  get needsReset(): boolean {
    return this.current === 'internal-error' || this.current === 'shutdown' || this.current === 'guest-panicked';
  }

  private announce(event: RunStateEvent): void {
    for (const l of this.listeners) l(event);
  }
}
