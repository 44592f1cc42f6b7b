/**
 * `qmigd-qemu`: a qmigd daemon started with QEMU's command line, for whatever starts QEMU
 * (libvirt's <emulator>, a script). Errors are printed as QEMU prints them ("PROG: -x: why")
 * with exit status 1.
 *
 * -daemonize as QEMU does it: the process started stays in the foreground until the daemon's
 * monitors listen and its pid file is written, then exits 0 (or 1 with the daemon's error). The
 * daemon itself is a child with no standard streams of its own, so that a caller waiting for
 * the end of its output (libvirt's probe does) gets it when the parent exits.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, statSync } from 'node:fs';
import { basename } from 'node:path';
import type { DaemonConfig } from '../../daemon/config.js';
import { DEFAULT_QMP_MEMORY_BUDGET } from '../../qmp/memory-budget.js';
import { DEFAULT_PROFILE, findProfile, PROFILES, setActiveProfile, type QemuProfile } from '../../profiles/index.js';
import { VERSION } from '../../version.js';
import { DEFAULT_HUGE_PAGE_ADVICE } from '../../native/ram-advice.js';
import type { Message } from './accelerator.js';
import { machineHelp, parseQemuCommandLine, QemuCliError, type QemuCommandLine } from './command-line.js';

const PROG = basename(process.argv[1] ?? 'qmigd-qemu');

/**
 * The release to be: named by the program (bin/qmigd-qemu-10.0, as distributions name QEMU
 * binaries, and what libvirt's <emulator> can point at), else QMIGD_QEMU_VERSION (for
 * scripts), else qmigd's default.
 */
function profileOf(prog: string, env: NodeJS.ProcessEnv): QemuProfile {
  const named = /^qmigd-qemu-(.+)$/.exec(prog)?.[1] ?? (env.QMIGD_QEMU_VERSION || undefined);
  if (named === undefined) return DEFAULT_PROFILE;
  const profile = findProfile(named);
  if (!profile) fail(`qmigd cannot be QEMU ${named}; it can be ${PROFILES.map((p) => p.id).join(', ')}`);
  return profile;
}
/** Set in the daemonized child: its descriptor 3 is the pipe to the waiting parent. */
const DAEMON_CHILD = 'QMIGD_QEMU_DAEMON_CHILD';

/** QEMU's lines on stderr: most carry the program's name, a few (from its KVM code) do not. */
function print(messages: Message[]): void {
  for (const m of messages) process.stderr.write('bare' in m ? `${m.bare}\n` : `${PROG}: ${m.prefixed}\n`);
}

function fail(message: string, before: Message[] = []): never {
  print([...before, { prefixed: message }]);
  process.exit(1);
}

function sizeOf(path: string): number | undefined {
  try {
    return statSync(path).size;
  } catch {
    return undefined;
  }
}

function configOf(cl: QemuCommandLine, profile: QemuProfile, env: NodeJS.ProcessEnv): DaemonConfig {
  return {
    qemuVersion: profile.id,
    qmp: cl.qmp,
    memoryBytes: cl.memoryBytes,
    ramId: cl.ramId,
    // A memory-backend-file's contents, when it holds a whole guest (QEMU creates it otherwise);
    // with share=on the file is the RAM, created or grown as QEMU does.
    memoryFile: cl.memoryFile !== undefined && (cl.memoryShare || sizeOf(cl.memoryFile) === cl.memoryBytes) ? cl.memoryFile : undefined,
    memoryShare: cl.memoryShare,
    memPrealloc: cl.memPrealloc,
    ramHugePages: DEFAULT_HUGE_PAGE_ADVICE,
    pageThread: false,
    faults: [],
    machine: cl.machine.name,
    migrationGlobals: cl.migrationGlobals,
    incoming: cl.incoming,
    paused: cl.paused,
    dirtyRate: 0,
    dirtyPattern: { kind: 'uniform' },
    coloCheckpointDigest: false,
    coloHeartbeatTimeoutMs: 0,
    name: cl.name,
    uuid: cl.uuid,
    cpus: cl.cpus,
    acpi: cl.acpi,
    accelerator: cl.accelerator,
    noShutdown: cl.noShutdown,
    // QEMU says nothing unless something is wrong; QMIGD_LOG_LEVEL says more.
    logLevel: env.QMIGD_LOG_LEVEL ?? 'warn',
    pidfile: cl.pidfile,
    sandbox: cl.sandbox,
    testHooks: env.QMIGD_TEST_HOOKS === '1',
    qmpMemoryLimit: DEFAULT_QMP_MEMORY_BUDGET,
    validate: env.QMIGD_VALIDATE === '1',
  };
}

/** The parent of -daemonize: starts the daemon and waits for its word. */
function daemonize(argv: string[]): void {
  const child = spawn(process.execPath, [process.argv[1]!, ...argv], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: { ...process.env, [DAEMON_CHILD]: '1' },
  });
  let said = '';
  const status = child.stdio[3] as NodeJS.ReadableStream;
  status.setEncoding('utf8');
  status.on('data', (d: string) => (said += d));
  const settle = (): void => {
    if (said.startsWith('ready')) process.exit(0);
    fail(said.replace(/^error: /, '').trimEnd() || `the daemon exited before it was ready`);
  };
  status.on('end', settle);
  child.on('error', (err) => fail(err.message));
  child.unref();
}

async function main(argv: string[]): Promise<void> {
  // First: which machines and options there are depends on the release.
  const profile = setActiveProfile(profileOf(PROG, process.env).id);
  let cl: QemuCommandLine;
  try {
    cl = parseQemuCommandLine(argv);
  } catch (err) {
    if (err instanceof QemuCliError) fail(err.message, err.before);
    throw err;
  }
  if (cl.action === 'version') {
    const { major, minor, micro } = profile.version;
    process.stdout.write(`QEMU emulator version ${major}.${minor}.${micro} (qmigd ${VERSION})\n${profile.copyright}\n`);
    return;
  }
  if (cl.action === 'help') {
    process.stdout.write(`usage: ${PROG} [options]: qmigd started with QEMU ${profile.id}'s command line (see qmigd's README, "Use as a QEMU binary")\n`);
    return;
  }
  if (cl.action === 'machine-help') {
    process.stdout.write(machineHelp());
    return;
  }
  const child = process.env[DAEMON_CHILD] === '1';
  print(cl.messages);
  if (cl.daemonize && !child) return daemonize(argv);
  // The daemonized child reports to its parent on descriptor 3 and has no other output.
  const status = child ? createWriteStream('', { fd: 3 }) : undefined;
  try {
    // Loaded only here: the program's other paths (-version, errors, the waiting parent of
    // -daemonize, which libvirt's probe pays for before its daemon starts) need none of it.
    const { startDaemon } = await import('../../daemon/daemon.js');
    const daemon = await startDaemon(configOf(cl, profile, process.env));
    for (const what of cl.ignored) daemon.log.debug({ option: what }, 'option accepted and ignored: hardware qmigd does not emulate');
    status?.end('ready\n');
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (status) status.end(`error: ${message}\n`, () => process.exit(1));
    else fail(message);
  }
}

await main(process.argv.slice(2));
