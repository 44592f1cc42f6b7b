/**
 * The command line. `qmigd [options]` serves QMP (the default command); later subcommands
 * (demo, inspect) hang off the same program. A user error prints one line and exits 1.
 */
import { Command, CommanderError, Option } from 'commander';
import { startDaemon } from '../daemon/daemon.js';
import type { DaemonConfig } from '../daemon/config.js';
import { NO_CPUS } from '../guest/cpu-topology.js';
import { parseWorkloadPattern, type WorkloadPattern } from '../guest/workload.js';
import { parseQmpSpec } from '../qmp/transports/spec.js';
import { DEFAULT_PROFILE, findProfile, PROFILES, setActiveProfile } from '../profiles/index.js';
import { VERSION } from '../version.js';
import { runDemo, type DemoOptions } from './demo.js';
import { inspectStream } from '../migration/inspect.js';
import { openSync } from 'node:fs';
import { SeekableFileInput } from '../migration/channels/file-input.js';
import { preadSource } from '../migration/channels/incoming-channel.js';
import { NO_SANDBOX, parseSandbox, type Sandbox } from './sandbox.js';
import { parseSize } from './size.js';
import type { FaultSpec } from '../faults/faults.js';
import { parseFaultSpec, readFaultsFile } from '../faults/spec.js';
import { DEFAULT_HUGE_PAGE_ADVICE, HUGE_PAGE_ADVICE, type HugePageAdvice } from '../native/ram-advice.js';
import { applyGlobals, GlobalError, machineGlobals, parseGlobal, type MigrationGlobals } from '../migration/globals.js';

const PAGE_SIZE = 4096;
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

class UsageError extends Error {}

interface ServeOptions {
  qemuVersion: string;
  qmp: string[];
  memory: string;
  ramId: string;
  memoryFile?: string;
  memoryShare: string;
  memPrealloc: boolean;
  ramHugepages: string;
  pageThread: string;
  fault?: string[];
  faults?: string;
  machine: string;
  global?: string[];
  incoming?: string;
  paused: boolean;
  name?: string;
  logLevel: string;
  pidfile?: string;
  dirtyRate: string;
  dirtyPattern: string;
  coloCheckpointDigest: boolean;
  coloHeartbeatTimeout: string;
  qmpMemoryLimit: string;
  sandbox?: string;
  testHooks: boolean;
}

function sandboxFrom(text: string | undefined): Sandbox {
  if (text === undefined) return NO_SANDBOX;
  try {
    return parseSandbox(text);
  } catch (err) {
    throw new UsageError(`--sandbox ${text}: ${(err as Error).message}`);
  }
}

function hugePageAdviceFrom(text: string): HugePageAdvice {
  const advice = HUGE_PAGE_ADVICE.find((a) => a === text);
  if (!advice) throw new UsageError(`--ram-hugepages: '${text}' is not one of ${HUGE_PAGE_ADVICE.join(', ')}`);
  return advice;
}

function faultsFrom(specs: string[] | undefined, file: string | undefined): FaultSpec[] {
  const out: FaultSpec[] = [];
  for (const s of specs ?? []) {
    try {
      out.push(parseFaultSpec(s));
    } catch (err) {
      throw new UsageError(`--fault ${s}: ${(err as Error).message}`);
    }
  }
  if (file === undefined) return out;
  try {
    return [...readFaultsFile(file), ...out];
  } catch (err) {
    throw new UsageError(`--faults ${file}: ${(err as Error).message}`);
  }
}

function onOff(flag: string, text: string): boolean {
  if (text !== 'on' && text !== 'off') throw new UsageError(`${flag}: '${text}' is not one of on, off`);
  return text === 'on';
}

function milliseconds(flag: string, text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n)) throw new UsageError(`${flag}: '${text}' is not a number of milliseconds`);
  return n;
}

export function configFrom(opts: ServeOptions, env: NodeJS.ProcessEnv = process.env): DaemonConfig {
  const profile = findProfile(opts.qemuVersion);
  if (!profile) throw new UsageError(`--qemu-version: '${opts.qemuVersion}' is not one of ${PROFILES.map((p) => p.id).join(', ')}`);
  const specs = opts.qmp.length ? opts.qmp : ['unix:./qmigd.sock,server=on,wait=off'];
  let memoryBytes: number;
  try {
    memoryBytes = parseSize(opts.memory);
  } catch (err) {
    throw new UsageError(`--memory: ${(err as Error).message}`);
  }
  if (memoryBytes <= 0 || memoryBytes % PAGE_SIZE !== 0) {
    throw new UsageError(`--memory: ${opts.memory} must be a positive multiple of ${PAGE_SIZE} bytes`);
  }
  if (!LOG_LEVELS.includes(opts.logLevel)) {
    throw new UsageError(`--log-level: '${opts.logLevel}' is not one of ${LOG_LEVELS.join(', ')}`);
  }
  if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(opts.ramId)) throw new UsageError(`--ram-id: '${opts.ramId}' is not a valid block name`);
  if (opts.machine.length === 0 || opts.machine.length > 255) throw new UsageError('--machine: the name must be 1 to 255 characters');
  let migrationGlobals: MigrationGlobals;
  try {
    // A name that is one of the release's machine types brings its compat, as in QEMU.
    const machine = profile.machines.find((m) => m.name === opts.machine);
    const settings = (opts.global ?? []).map((g) => {
      const setting = parseGlobal(g);
      if (!setting) throw new UsageError(`--global ${g}: expected DRIVER.PROPERTY=VALUE`);
      return setting;
    });
    migrationGlobals = applyGlobals(profile, machineGlobals(profile, machine), settings);
  } catch (err) {
    if (err instanceof GlobalError) throw new UsageError(`--global: ${err.message}`);
    throw err;
  }
  let dirtyRate: number;
  try {
    dirtyRate = parseSize(opts.dirtyRate);
  } catch (err) {
    throw new UsageError(`--dirty-rate: ${(err as Error).message}`);
  }
  let qmpMemoryLimit: number;
  try {
    qmpMemoryLimit = parseSize(opts.qmpMemoryLimit);
  } catch (err) {
    throw new UsageError(`--qmp-memory-limit: ${(err as Error).message}`);
  }
  if (qmpMemoryLimit < 1 << 20) throw new UsageError('--qmp-memory-limit: at least 1M');
  let dirtyPattern: WorkloadPattern;
  try {
    dirtyPattern = parseWorkloadPattern(opts.dirtyPattern);
  } catch (err) {
    throw new UsageError(`--dirty-pattern: ${(err as Error).message}`);
  }
  return {
    qemuVersion: profile.id,
    dirtyRate,
    dirtyPattern,
    coloCheckpointDigest: opts.coloCheckpointDigest,
    coloHeartbeatTimeoutMs: milliseconds('--colo-heartbeat-timeout', opts.coloHeartbeatTimeout),
    qmp: specs.map((s) => {
      try {
        return parseQmpSpec(s);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
    }),
    memoryBytes,
    ramId: opts.ramId,
    memoryFile: opts.memoryFile,
    memoryShare: memoryShareFrom(opts),
    memPrealloc: opts.memPrealloc,
    ramHugePages: hugePageAdviceFrom(opts.ramHugepages),
    pageThread: onOff('--page-thread', opts.pageThread),
    faults: faultsFrom(opts.fault, opts.faults),
    machine: opts.machine,
    migrationGlobals,
    incoming: opts.incoming,
    paused: opts.paused,
    name: opts.name,
    uuid: '00000000-0000-0000-0000-000000000000',
    cpus: NO_CPUS,
    acpi: false,
    accelerator: 'tcg',
    noShutdown: false,
    logLevel: opts.logLevel,
    pidfile: opts.pidfile,
    qmpMemoryLimit,
    sandbox: sandboxFrom(opts.sandbox),
    testHooks: opts.testHooks,
    validate: env.QMIGD_VALIDATE === '1',
  };
}

/** --memory-share on needs the file it maps. */
function memoryShareFrom(opts: ServeOptions): boolean {
  const share = onOff('--memory-share', opts.memoryShare);
  if (share && opts.memoryFile === undefined) throw new UsageError('--memory-share on: needs --memory-file, the file that is the RAM');
  return share;
}

function program(): Command {
  const p = new Command('qmigd')
    .description('A QMP-compatible daemon (QEMU 7.2 or 10.0) with a live-migration engine')
    .version(VERSION, '-V, --version')
    .addOption(new Option('--qmp <spec>', 'QMP monitor: unix:PATH[,server=on][,wait=off], tcp:HOST:PORT[,server=on][,wait=off] or ws:HOST:PORT[,origin=URL]... (only web pages of those origins may connect); ,exclusive=on serves one client at a time as QEMU does (repeatable)')
      .argParser((v: string, prev: string[]) => [...prev, v]).default([], 'unix:./qmigd.sock,server=on,wait=off'))
    .option('--qemu-version <version>', `the QEMU release to be: ${PROFILES.map((p) => p.id).join(', ')}`, DEFAULT_PROFILE.id)
    .option('--qmp-memory-limit <size>', 'what all QMP connections together may hold of unread input and output; past it the greediest is dropped', '256M')
    .option('-m, --memory <size>', 'guest RAM size: bytes, or with a K/M/G/T suffix', '128M')
    .option('--ram-id <name>', 'name of the RAM block in the migration stream', 'ram')
    .option('--memory-file <path>', 'initial RAM contents (size must equal --memory)')
    .option('--memory-share <on|off>', 'on: the --memory-file is the RAM, mapped shared (QEMU\'s memory-backend-file share=on): created or grown from empty to --memory, and what the guest or a migration writes is in the file', 'off')
    .option('--mem-prealloc', 'fault in all of RAM at start-up, as QEMU\'s -mem-prealloc (faster incoming migration)', false)
    .option('--ram-hugepages <advice>', `transparent huge pages for guest RAM: on (madvise MADV_HUGEPAGE, as QEMU), off (MADV_NOHUGEPAGE) or kernel (no advice)`, DEFAULT_HUGE_PAGE_ADVICE)
    .option('--page-thread <on|off>', 'send the pages of a plain, XBZRLE or multifd outgoing migration (postcopy with the pages asked for, COLO with its checkpoints, mapped-ram) from a thread of their own, as QEMU\'s migration thread, and load the RAM sections of such an incoming one on another; off: on the thread that serves QMP (README, "QMP latency during a migration")', 'off')
    .addOption(new Option('--fault <spec>', 'arm a fault before the first byte: the JSON of __org.qmigd_fault-add, or kind=K,key=value,... (repeatable; README, "Breaking migrations on purpose")')
      .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]))
    .option('--faults <file>', 'arm the faults of a YAML or JSON file (a list of fault specs, e.g. a timeline with after-ms)')
    .option('--machine <name>', 'machine type name carried in the migration stream', 'none')
    .addOption(new Option('--global <driver.property=value>', "as QEMU's -global: migration.send-switchover-start, migration.multifd-flush-after-each-section, migration.zero-page-detection and migration.x-preempt-pre-7-2 change the stream (repeatable)")
      .argParser((v: string, prev: string[] | undefined) => [...(prev ?? []), v]))
    .option('--incoming <uri>', 'wait for an incoming migration on URI, or "defer" for migrate-incoming')
    .option('-S, --paused', 'start the guest stopped (run state prelaunch) until cont', false)
    .option('--name <name>', 'guest name (query-name)')
    .option('--log-level <level>', `log level: ${LOG_LEVELS.join(', ')}`, 'info')
    .option('--pidfile <path>', 'write the process id to PATH')
    .option('--sandbox <spec>', "as QEMU's -sandbox: on,spawn=deny refuses exec: migration URIs (shell commands)")
    .option('--test-hooks', 'serve the commands that break the daemon on purpose (__org.qmigd_colo-crash-at, __org.qmigd_sleep)', false)
    .option('--dirty-rate <bytes/s>', 'bytes per second the guest dirties while it runs (K/M/G suffixes)', '0')
    .option('--dirty-pattern <pattern>', 'which pages the guest writes: uniform, sequential or hot:PERCENT', 'uniform')
    .option('--colo-checkpoint-digest', 'hash RAM at every COLO checkpoint and log it (costs pause time)', false)
    .option('--colo-heartbeat-timeout <ms>', 'fail over by itself this long after losing the COLO peer (0: wait for x-colo-lost-heartbeat)', '0')
    .action(async (opts: ServeOptions) => {
      const config = configFrom(opts);
      const daemon = await startDaemon(config);
      for (const spec of config.qmp) {
        if (spec.kind === 'unix' && !opts.qmp.length) process.stderr.write(`qmigd: QMP on unix:${spec.path} (no --qmp given)\n`);
      }
      daemon.log.debug('started');
    });
  // Options after a subcommand's name belong to the subcommand (demo has its own --memory and
  // --dirty-rate); without a subcommand, `qmigd [options]` serves as before.
  p.enablePositionalOptions();
  p.command('demo')
    .description('migrate a guest with random RAM between two local qmigd daemons, showing progress, and compare the RAM digests')
    .option('-m, --memory <size>', 'guest RAM size: bytes, or with a K/M/G/T suffix', '256M')
    .option('--dirty-rate <bytes/s>', 'bytes per second the source guest dirties (K/M/G suffixes)', '8M')
    .option('--max-bandwidth <bytes/s>', 'migration max-bandwidth in bytes per second; 0 is unlimited', '0')
    .option('--xbzrle', 'enable the xbzrle capability', false)
    .option('--auto-converge', 'enable the auto-converge capability', false)
    .action(async (opts: DemoOptions) => {
      process.exit(await runDemo(opts));
    });
  p.command('inspect')
    .description('decode a migration stream (a file, or standard input) and report its sections, records, commands and device state, or where and why it is invalid')
    .argument('[file]', 'the stream; - or nothing for standard input', '-')
    .option('--ram <out>', 'write the RAM the stream produces to OUT')
    .option('--offset <bytes>', "a file's stream starts at this byte, as file:FILE,offset=BYTES wrote it", '0')
    .option('--qemu-version <version>', `read it as this QEMU release's destination: ${PROFILES.map((p) => p.id).join(', ')}`, DEFAULT_PROFILE.id)
    .action(async (file: string, opts: { ram?: string; offset: string; qemuVersion: string }) => {
      const profile = findProfile(opts.qemuVersion);
      if (!profile) throw new UsageError(`--qemu-version: '${opts.qemuVersion}' is not one of ${PROFILES.map((p) => p.id).join(', ')}`);
      setActiveProfile(profile.id);
      const offset = parseSize(opts.offset);
      if (offset > 0 && file === '-') throw new UsageError('--offset: only for a file, not standard input');
      const print = (line: string): boolean => process.stdout.write(`${line}\n`);
      let result;
      if (file === '-') result = await inspectStream(process.stdin, print);
      else {
        // A file is read at positions, as a file: destination reads it (mapped-ram's pages).
        let fd: number;
        try {
          fd = openSync(file, 'r');
        } catch (err) {
          throw new Error(`${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'No such file or directory' : (err as Error).message}`);
        }
        result = await inspectStream(new SeekableFileInput(fd, offset), print, preadSource(fd, offset));
      }
      if (result.ok && opts.ram && result.ram) await result.ram.saveFile(opts.ram);
      process.exit(result.ok ? 0 : 1);
    });
  return p;
}

export async function main(argv: string[]): Promise<void> {
  const p = program();
  p.exitOverride();
  p.configureOutput({ writeErr: () => undefined });
  try {
    await p.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0) process.exit(0); // --help, --version
      process.stderr.write(`qmigd: ${err.message.replace(/^error: /, '').split('\n')[0]}\n`);
      process.exit(1);
    }
    // User errors and start-up failures (a port in use, a path we cannot bind): one line, exit 1.
    process.stderr.write(`qmigd: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}

await main(process.argv);
