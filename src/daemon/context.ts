/**
 * What command modules may reach: the pieces of one running daemon. Commands depend on this,
 * never on the CLI, and the QMP layer never depends on it.
 */
import type { Logger } from 'pino';
import type { Guest } from '../guest/guest.js';
import type { MigrationService } from '../migration/migration.js';
import type { CommandRegistry } from '../qmp/registry.js';
import type { QmpServer } from '../qmp/server.js';
import type { DaemonConfig } from './config.js';

export type ShutdownCause = 'host-qmp-quit' | 'host-signal';

export interface YankInstance {
  type: 'block-node' | 'chardev' | 'migration';
  id?: string;
  'node-name'?: string;
}

/** Things that can be yanked (their network connections dropped at once), as QEMU's yank.c. */
export class YankRegistry {
  private readonly instances = new Map<string, { instance: YankInstance; yank: () => void }>();

  private static key(i: YankInstance): string {
    return `${i.type}:${i.id ?? i['node-name'] ?? ''}`;
  }

  register(instance: YankInstance, yank: () => void): () => void {
    const key = YankRegistry.key(instance);
    this.instances.set(key, { instance, yank });
    return () => this.instances.delete(key);
  }

  list(): YankInstance[] {
    return [...this.instances.values()].map((e) => e.instance);
  }

  /** All or nothing, as qmp_yank(): every instance is looked up before any is yanked. */
  yank(instances: YankInstance[]): boolean {
    const found = instances.map((i) => this.instances.get(YankRegistry.key(i)));
    if (found.some((f) => !f)) return false;
    for (const f of found) f!.yank();
    return true;
  }
}

/** A character device that carries a QMP monitor, as query-chardev lists it. */
export interface Chardev {
  label: string;
  filename: string;
}

export interface Daemon {
  readonly config: DaemonConfig;
  readonly log: Logger;
  readonly registry: CommandRegistry;
  readonly qmp: QmpServer;
  readonly guest: Guest;
  readonly migration: MigrationService;
  readonly yank: YankRegistry;
  /** The monitors' chardevs, oldest first. */
  readonly chardevs: Chardev[];
  readonly version: { major: number; minor: number; micro: number; package: string };
  /** Emits SHUTDOWN at once, then closes every monitor and socket and exits 0. */
  shutdown(cause: ShutdownCause): void;
  /** Closes every monitor and socket and exits 0 (after a SHUTDOWN already sent). */
  exit(): void;
}
