/**
 * The profiles qmigd has, the default, and the one this process is (see profile.ts).
 */
import type { ProfileId, QemuProfile } from './profile.js';
import { QEMU_7_2 } from './qemu-7.2.js';
import { QEMU_10_0 } from './qemu-10.0.js';

export type { ProfileId, QemuProfile } from './profile.js';

/** Oldest first. */
export const PROFILES: readonly QemuProfile[] = [QEMU_7_2, QEMU_10_0];

/** The newest profile that is complete. */
export const DEFAULT_PROFILE: QemuProfile = [...PROFILES].reverse().find((p) => p.complete)!;

export function findProfile(id: string): QemuProfile | undefined {
  return PROFILES.find((p) => p.id === id);
}

let active: QemuProfile = DEFAULT_PROFILE;

/** The release this process is. */
export function activeProfile(): QemuProfile {
  return active;
}

/** Once, at start-up (and by unit tests that try several). */
export function setActiveProfile(id: ProfileId): QemuProfile {
  active = findProfile(id)!;
  return active;
}
