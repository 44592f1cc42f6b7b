/**
 * -accel, -machine accel=A:B and -enable-kvm: QEMU 7.2 tries the accelerators in order and takes
 * the first that starts; KVM starts when /dev/kvm opens. qmigd runs no guest code, so which one
 * is "running" changes nothing here but what the machine reports (query-kvm): it is chosen
 * exactly as QEMU would choose it on this host, so that libvirt, which caches what an emulator
 * reported against whether /dev/kvm is usable, sees the answers the real QEMU would give.
 */
import { activeProfile } from '../../profiles/index.js';
import { closeSync, constants, openSync } from 'node:fs';
import type { Accelerator } from '../../guest/machines.js';

/** One accelerator asked for; `where` is the option to name in its errors (`-accel kvm`). */
export interface AccelRequest {
  name: string;
  where?: string;
}

/** What choosing printed: bare lines (QEMU's KVM code prints one without its name) or prefixed ones. */
export type Message = { bare: string } | { prefixed: string };

export class AccelError extends Error {
  constructor(readonly messages: Message[]) {
    super(messages.map((m) => ('bare' in m ? m.bare : m.prefixed)).join('\n'));
  }
}

const STRERROR: Record<string, string> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  ENODEV: 'No such device',
  ENXIO: 'No such device or address',
};

/** Why /dev/kvm does not open (strerror's words), or undefined when it does. */
export function kvmUnavailable(): string | undefined {
  try {
    closeSync(openSync('/dev/kvm', constants.O_RDWR));
    return undefined;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
    return STRERROR[code] ?? code;
  }
}

/**
 * The accelerator QEMU would run with, and what it would print on the way (warnings when a
 * later accelerator is taken); throws AccelError when none starts.
 */
export function chooseAccelerator(requests: AccelRequest[], unavailable: () => string | undefined = kvmUnavailable): { accelerator: Accelerator; messages: Message[] } {
  const messages: Message[] = [];
  const list = requests.length ? requests : [{ name: 'tcg' }];
  for (const [i, { name, where }] of list.entries()) {
    const at = where ? `${where}: ` : '';
    if (name === 'tcg') return { accelerator: 'tcg', messages: i > 0 ? [...messages, { prefixed: 'falling back to tcg' }] : messages };
    if (name !== 'kvm') throw new AccelError([...messages, { prefixed: `${at}invalid accelerator ${name}` }]);
    const why = unavailable();
    if (why === undefined) return { accelerator: 'kvm', messages };
    const module = `Could not access KVM kernel module: ${why}`;
    messages.push(activeProfile().kvmModuleErrorReported ? { prefixed: `${at}${module}` } : { bare: module }, { prefixed: `${at}failed to initialize kvm: ${why}` });
  }
  throw new AccelError(messages);
}
