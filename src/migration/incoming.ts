/**
 * The destination side (process_incoming_migration_co in 7.2): wait for the one connection,
 * load the stream into RAM, then start the guest as the source's global state and autostart
 * say. `none` → `active` → `completed`; on a failed load QEMU 7.2 reports why and exits 1,
 * and so does qmigd (the daemon's onFatal).
 */
import type { Logger } from 'pino';
import type { Guest } from '../guest/guest.js';
import { listenIncoming, type IncomingConnection, type IncomingListener } from './channels/incoming-channel.js';
import type { MigrationUri } from './channels/uri.js';
import { LoadError } from './load-error.js';
import { loadVmState } from './loadvm.js';
import { RpMessage } from './stream/constants.js';
import { StreamReader } from './stream/reader.js';
import type { MigrationStateCell } from './state.js';

export interface IncomingEnv {
  guest: Guest;
  machine: string;
  state: MigrationStateCell;
  log: Logger;
  /** A failed incoming migration ends the process, after these lines are reported. */
  onFatal: (lines: string[]) => void;
}

export class IncomingMigration {
  private listener?: IncomingListener;
  /** Dropped once the incoming state is destroyed, as mis->socket_address. */
  socketAddress?: Record<string, unknown>;
  loadedBytes = 0;

  constructor(private readonly env: IncomingEnv) {}

  async listen(uri: MigrationUri): Promise<void> {
    this.listener = await listenIncoming(uri, (conn) => void this.receive(conn));
    this.socketAddress = this.listener.socketAddress;
    this.env.log.info('waiting for an incoming migration');
  }

  private async receive(conn: IncomingConnection): Promise<void> {
    const { env } = this;
    env.state.change('none', 'active');
    let returnPath = false;
    const rp = (type: number, value: number): void => {
      const b = Buffer.alloc(8);
      b.writeUInt16BE(type, 0);
      b.writeUInt16BE(4, 2);
      b.writeUInt32BE(value, 4);
      conn.output?.write(b);
    };
    const started = Date.now();
    try {
      const result = await loadVmState(new StreamReader(conn.input), {
        ram: env.guest.ram,
        machine: env.machine,
        hooks: {
          openReturnPath: () => (returnPath = conn.output !== undefined),
          sendPong: (v) => {
            if (returnPath) rp(RpMessage.PONG, v);
            return returnPath;
          },
        },
        warn: (m) => env.log.warn(m),
      });
      this.loadedBytes = result.bytes;
      this.startGuest(result.globalState);
      env.log.info({ bytes: result.bytes, pages: result.pages, ms: Date.now() - started }, 'incoming migration completed');
      env.state.change('active', 'completed');
      if (returnPath) rp(RpMessage.SHUT, 0);
      conn.output?.end();
      this.destroy();
    } catch (err) {
      env.state.change('active', 'failed');
      if (returnPath) rp(RpMessage.SHUT, 1);
      conn.close();
      this.destroy();
      const lines = err instanceof LoadError ? [...err.lines, err.summary, err.located] : [`load of migration failed: ${(err as Error).message}`];
      env.onFatal(lines);
    }
  }

  /** process_incoming_migration_bh(): autostart applies when the source was running. */
  private startGuest(globalState: string | undefined): void {
    const { guest } = this.env;
    if (globalState === undefined || globalState === 'running') {
      if (guest.autostart) guest.runState.start();
      else guest.runState.set('paused');
    } else guest.runState.set(globalState as never);
  }

  private destroy(): void {
    this.listener?.close();
    this.socketAddress = undefined;
  }
}
