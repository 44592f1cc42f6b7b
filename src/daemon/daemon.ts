/**
 * Wiring: one logger, one schema set, one registry, one QMP server, the guest, the signals.
 * startDaemon() resolves once every monitor listens; the returned Daemon stops on quit, SIGINT
 * or SIGTERM with a SHUTDOWN event, closed sockets, removed socket files and exit status 0.
 */
import { unlinkSync, writeFileSync } from 'node:fs';
import pino from 'pino';
import { registerCommands } from '../commands/index.js';
import { RunStateMachine } from '../guest/run-state.js';
import { CommandRegistry } from '../qmp/registry.js';
import { SchemaSet } from '../qmp/schema.js';
import { QmpServer } from '../qmp/server.js';
import { VERSION } from '../version.js';
import type { DaemonConfig } from './config.js';
import { YankRegistry, type Daemon, type ShutdownCause } from './context.js';

/** QEMU's version, as qmigd reports it to QMP clients. */
export const QEMU_VERSION = { major: 7, minor: 2, micro: 0 };

export async function startDaemon(config: DaemonConfig): Promise<Daemon> {
  const log = pino({ level: config.logLevel, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
  const registry = new CommandRegistry(new SchemaSet());
  const version = { ...QEMU_VERSION, package: `qmigd ${VERSION}` };
  const qmp = new QmpServer({ registry, log, version, validate: config.validate });
  const runState = new RunStateMachine(config.incoming !== undefined ? 'inmigrate' : 'prelaunch');
  runState.onEvent((event) => qmp.events.emit(event));
  const yank = new YankRegistry();

  let stopping = false;
  const daemon: Daemon = {
    config, log, registry, qmp, runState, yank, version,
    shutdown(cause: ShutdownCause) {
      if (stopping) return;
      stopping = true;
      qmp.events.emit('SHUTDOWN', { guest: false, reason: cause });
      log.info({ cause }, 'shutting down');
      // Monitors close on the next turn, so a quit's own reply still goes out after SHUTDOWN.
      setImmediate(() =>
        void qmp.close().finally(() => {
          if (config.pidfile) removeQuietly(config.pidfile);
          process.exit(0);
        }),
      );
    },
  };
  registerCommands(daemon);

  // Written before any monitor listens, so whoever sees a monitor can rely on the pidfile.
  if (config.pidfile) writeFileSync(config.pidfile, `${process.pid}\n`);
  for (const [index, spec] of config.qmp.entries()) {
    const transport = await qmp.open(spec);
    if (spec.kind !== 'ws') {
      // QEMU names -qmp chardevs compat_monitorN and registers their sockets for yank.
      yank.register({ type: 'chardev', id: `compat_monitor${index}` }, () => transport.dropClients());
    }
  }

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      // As QEMU: "terminating on signal N" on stderr, then a SHUTDOWN with reason host-signal.
      process.stderr.write(`qmigd: terminating on signal ${signal === 'SIGINT' ? 2 : 15}\n`);
      daemon.shutdown('host-signal');
    });
  }

  // The guest starts unless -S or an incoming migration holds it.
  if (!config.paused && config.incoming === undefined) runState.start();
  log.info({ state: runState.state, memory: config.memoryBytes, ramId: config.ramId, machine: config.machine }, 'guest ready');
  return daemon;
}

function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* gone already */
  }
}
