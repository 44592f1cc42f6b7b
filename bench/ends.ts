/**
 * One end of a benchmarked migration: a qmigd daemon (QmigdProcess from src/cli/migration-pair)
 * or a real QEMU 7.2 (`qemu-system-x86_64 -M none` with one RAM block `m`), each with a
 * negotiated QMP client on a unix socket and its process id (for /proc/PID/status).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { QmigdProcess, QmpClient } from '../src/cli/migration-pair.js';
import { MiB, QEMU, sleep, until } from './common.js';

export type Kind = 'qmigd' | 'qemu';

export interface End {
  kind: Kind;
  name: string;
  pid: number;
  qmp: QmpClient;
  /** The last lines of its stderr. */
  log(): string;
  stop(): Promise<void>;
}

export interface EndSpec {
  kind: Kind;
  /** Also the socket's file name in `dir`. */
  name: string;
  dir: string;
  /** Guest RAM, bytes (a multiple of 1 MiB). */
  size: number;
  /** Initial RAM contents; without it the RAM is fresh (all zero). */
  ramFile?: string;
  /** -S: run state prelaunch until cont. */
  paused?: boolean;
  /** `-incoming defer` (then migrate-incoming). */
  deferIncoming?: boolean;
  /** qmigd only: --qemu-version (the QEMU release to be); undefined: qmigd's default. */
  release?: string;
  /** qmigd only: further arguments (e.g. the workload). */
  qmigdArgs?: string[];
  /** qmigd only: arguments for node itself (bench/ram-mapping.ts --profile: --cpu-prof). */
  nodeArgs?: string[];
  /**
   * Fault in all of RAM at start-up: qmigd --mem-prealloc, QEMU's backend prealloc=on (what
   * -mem-prealloc sets). Only where there is no ramFile (qmigd ignores it with one: loading the
   * file touches every page anyway).
   */
  prealloc?: boolean;
  /**
   * QEMU only: start it with transparent huge pages disabled for the process
   * (prctl(PR_SET_THP_DISABLE), inherited across exec; set by a python3 wrapper), so its guest
   * RAM is faulted in 4 KiB pages as qmigd's is.
   */
  thpOff?: boolean;
}

/** prctl(PR_SET_THP_DISABLE, 1), then exec argv[1:]. */
const THP_OFF_WRAPPER = 'import ctypes, os, sys\nif ctypes.CDLL(None, use_errno=True).prctl(41, 1, 0, 0, 0) != 0: sys.exit("prctl(PR_SET_THP_DISABLE) failed")\nos.execvp(sys.argv[1], sys.argv[1:])';

/** Whether QEMU can be started with THP off here (python3 with ctypes, Linux prctl). */
export function thpOffAvailable(): boolean {
  const r = spawnSync('python3', ['-c', THP_OFF_WRAPPER, 'true'], { stdio: 'ignore' });
  return r.status === 0;
}

export async function startEnd(spec: EndSpec): Promise<End> {
  return spec.kind === 'qmigd' ? startQmigd(spec) : startQemu(spec);
}

async function startQmigd(spec: EndSpec): Promise<End> {
  const args = ['-m', String(spec.size)];
  if (spec.ramFile) args.push('--memory-file', spec.ramFile);
  if (spec.paused) args.push('-S');
  if (spec.deferIncoming) args.push('--incoming', 'defer');
  if (spec.prealloc && !spec.ramFile) args.push('--mem-prealloc');
  if (spec.release) args.push('--qemu-version', spec.release);
  args.push(...(spec.qmigdArgs ?? []));
  const p = await QmigdProcess.start(spec.name, spec.dir, args, { logLevel: 'info', nodeArgs: spec.nodeArgs });
  // --page-thread on: a source's page thread, a destination's load thread, boot with the daemon,
  // which has long been up by the time it migrates (libvirt sets a destination's monitor up
  // before migrate-incoming): the run starts once the thread is, not in its start-up.
  const onOff = args.indexOf('--page-thread');
  if (onOff >= 0 && args[onOff + 1] === 'on') {
    const ready = spec.deferIncoming ? 'load thread ready' : 'page thread ready';
    await until(`the ${spec.name}'s thread`, async () => p.stderrTail(1000), (log) => log.includes(ready));
  }
  return { kind: 'qmigd', name: spec.name, pid: p.proc.pid!, qmp: p.qmp, log: () => p.stderrTail(10), stop: () => p.stop() };
}

/**
 * qemu-system-x86_64 -M none,memory-backend=m -object memory-backend-{file,ram},id=m,... -m SIZE
 *   -display none [-S] -nodefaults -qmp unix:SOCK,server=on,wait=off [-incoming defer]
 * The file backend maps the RAM file share=off (the guest's writes never reach the file).
 */
async function startQemu(spec: EndSpec): Promise<End> {
  const socket = join(spec.dir, `${spec.name}.sock`);
  const backend = spec.ramFile
    ? `memory-backend-file,id=m,size=${spec.size},mem-path=${spec.ramFile},share=off`
    : `memory-backend-ram,id=m,size=${spec.size}${spec.prealloc ? ',prealloc=on' : ''}`;
  const args = [
    '-M', 'none,memory-backend=m', '-object', backend, '-m', `${spec.size / MiB}M`,
    '-display', 'none', ...(spec.paused ? ['-S'] : []), '-nodefaults',
    '-qmp', `unix:${socket},server=on,wait=off`, ...(spec.deferIncoming ? ['-incoming', 'defer'] : []),
  ];
  const proc = spec.thpOff
    ? spawn('python3', ['-c', THP_OFF_WRAPPER, QEMU, ...args], { cwd: spec.dir, stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(QEMU, args, { cwd: spec.dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let tail = '';
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (d: string) => (tail = (tail + d).slice(-8192)));
  const exited = new Promise<void>((r) => {
    proc.on('exit', () => r());
    proc.on('error', (err) => {
      tail += `\n${err.message}`;
      r();
    });
  });
  const alive = (): boolean => proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined;
  const kill = async (): Promise<void> => {
    if (alive()) proc.kill('SIGKILL');
    await exited;
  };
  // QEMU creates the socket file a moment before it accepts: retry until the greeting comes.
  const deadline = Date.now() + 15_000;
  let qmp: QmpClient | undefined;
  while (!qmp) {
    if (existsSync(socket)) {
      try {
        qmp = await QmpClient.connect(socket, 5000);
        break;
      } catch {
        /* not accepting yet */
      }
    }
    if (!alive() || Date.now() > deadline) {
      await kill();
      throw new Error(`${spec.name}: QEMU did not open its QMP socket: ${tail.trim() || `(exit ${proc.exitCode ?? proc.signalCode})`}`);
    }
    await sleep(20);
  }
  const client = qmp;
  return {
    kind: 'qemu',
    name: spec.name,
    pid: proc.pid!,
    qmp: client,
    log: () => tail.trim(),
    async stop() {
      client.close();
      await kill();
    },
  };
}
