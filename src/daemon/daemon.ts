/**
 * Wiring: one logger, one schema set, one registry, one QMP server, the guest, the signals.
 * startDaemon() resolves once every monitor listens; the returned Daemon stops on quit, SIGINT
 * or SIGTERM with a SHUTDOWN event, closed sockets, removed socket files and exit status 0.
 */
import { unlinkSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import pino, { type Logger } from 'pino';
import { faults, type FaultSpec } from '../faults/faults.js';
import { registerCommands } from '../commands/index.js';
import { Guest } from '../guest/guest.js';
import { MigrationService } from '../migration/migration.js';
import { adviseHugePages } from '../native/ram-advice.js';
import { setActiveProfile } from '../profiles/index.js';
import { CommandRegistry } from '../qmp/registry.js';
import { SchemaSet } from '../qmp/schema.js';
import { QmpServer } from '../qmp/server.js';
import { VERSION } from '../version.js';
import type { JsonValue } from '../qmp/json-writer.js';
import type { DaemonConfig } from './config.js';
import { YankRegistry, type Daemon, type ShutdownCause } from './context.js';

export async function startDaemon(config: DaemonConfig): Promise<Daemon> {
  const log = pino({ level: config.logLevel, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
  // Before anything reads it: the schema, the errors' texts, the migration's rules.
  const profile = setActiveProfile(config.qemuVersion);
  const registry = new CommandRegistry(new SchemaSet(), config.testHooks);
  const version = { ...profile.version, package: `qmigd ${VERSION}` };
  const qmp = new QmpServer({ registry, log, version, validate: config.validate, memoryBudget: config.qmpMemoryLimit });
  const guest = new Guest({
    ramId: config.ramId,
    memoryBytes: config.memoryBytes,
    sharedFile: config.memoryShare ? config.memoryFile : undefined,
    incoming: config.incoming !== undefined,
    autostart: !config.paused,
    power: {
      acpi: () => config.acpi,
      noShutdown: () => config.noShutdown,
      emit: (event, data) => qmp.events.emit(event, data),
      exit: () => daemon.exit(),
    },
  });
  // Before anything touches the RAM: the advice decides how its pages will be faulted in.
  const advised = adviseHugePages(guest.ram.segments, config.ramHugePages);
  if ('error' in advised) log.warn(`--ram-hugepages ${config.ramHugePages}: ${advised.error}; guest RAM keeps the kernel's default pages`);
  // Pre-allocation first: loading a file leaves its zero pages untouched.
  if (config.memPrealloc) guest.ram.prealloc();
  if (config.memoryFile) await (config.memoryShare ? guest.ram.scanZeroPages() : guest.ram.loadFile(config.memoryFile));
  guest.workload.set(config.dirtyRate, config.dirtyPattern);
  guest.runState.onEvent((event) => qmp.events.emit(event));
  const yank = new YankRegistry();
  const migration = new MigrationService({
    guest,
    machine: config.machine,
    globals: config.migrationGlobals,
    emit: (event, data) => qmp.events.emit(event, data as { [key: string]: JsonValue }),
    log: log.child({ component: 'migration' }),
    registerYank: (fn) => yank.register({ type: 'migration' }, fn),
    coloDigest: config.coloCheckpointDigest,
    spawnDenied: config.sandbox.spawnDenied,
    coloHeartbeatTimeoutMs: config.coloHeartbeatTimeoutMs,
    pageThread: config.pageThread,
    incomingAtStart: config.incoming !== undefined,
    // As QEMU 7.2 after a failed incoming load: say why, then exit(EXIT_FAILURE).
    onFatal: (lines) => {
      for (const line of lines) log.error(line);
      if (config.pidfile) removeQuietly(config.pidfile);
      process.exit(1);
    },
  });

  let stopping = false;
  const daemon: Daemon = {
    config, log, registry, qmp, guest, migration, yank, version, chardevs: [],
    shutdown(cause: ShutdownCause) {
      if (stopping) return;
      qmp.events.emit('SHUTDOWN', { guest: false, reason: cause });
      daemon.exit();
    },
    exit() {
      if (stopping) return;
      stopping = true;
      log.info('shutting down');
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
  armFaults(config.faults, registry, qmp, log);
  // A QEMU slow to start: the process is there, its monitors and migration port are not yet.
  const slow = faults.startDelay();
  if (slow > 0) await sleep(slow);

  // -incoming URI goes through migrate-incoming, so a later QMP call finds it started; it
  // listens before the monitors do, so whoever reaches QMP can already reach the port.
  if (config.incoming !== undefined && config.incoming !== 'defer') await migration.startIncoming(config.incoming);

  // Written before any monitor listens, so whoever sees a monitor can rely on the pidfile.
  if (config.pidfile) writeFileSync(config.pidfile, `${process.pid}\n`);
  for (const [index, spec] of config.qmp.entries()) {
    // QEMU: "-qmp unix:...: Failed to bind socket to ...: No such file or directory".
    const transport = await qmp.open(spec).catch((err: Error) => {
      throw new Error(`${spec.option ?? `--qmp ${spec.text}`}: ${err.message}`);
    });
    if (spec.kind !== 'ws') {
      // QEMU names -qmp chardevs compat_monitorN (-chardev names its own) and registers their
      // sockets for yank.
      const label = spec.label ?? `compat_monitor${index}`;
      daemon.chardevs.push({ label, filename: `${transport.where}${spec.server ? ',server=on' : ''}` });
      yank.register({ type: 'chardev', id: label }, () => transport.dropClients());
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
  if (!config.paused && config.incoming === undefined) guest.runState.start();
  log.info({ state: guest.runState.state, memory: config.memoryBytes, ramId: config.ramId, machine: config.machine }, 'guest ready');
  return daemon;
}

function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* gone already */
  }
}

/**
 * Faults fire with a log line and __org.qmigd_FAULT; those of the command line are armed now,
 * before the first byte, each checked by fault-add's schema as the command's arguments are.
 */
function armFaults(specs: FaultSpec[], registry: CommandRegistry, qmp: QmpServer, log: Logger): void {
  faults.attach({
    fired: (id, kind, action) => {
      log.warn({ fault: id, kind }, `fault ${id}: ${action}`);
      qmp.events.emit('__org.qmigd_FAULT', { id, kind, action });
    },
    crash: () => process.kill(process.pid, 'SIGKILL'),
  });
  const schema = registry.schemas.commands.get('__org.qmigd_fault-add')!;
  for (const spec of specs) {
    if (!schema.validateArguments(spec)) throw new Error(`--fault ${JSON.stringify(spec)}: ${registry.schemas.describeErrors(schema.validateArguments)}`);
    try {
      faults.add(spec);
    } catch (err) {
      throw new Error(`--fault ${JSON.stringify(spec)}: ${(err as Error).message}`);
    }
  }
}
