/**
 * Start-up, as libvirt sees it: an emulator is started for every capability probe and every
 * domain, so how soon it answers matters. Measured for QEMU 7.2 and qmigd-qemu on the same
 * command line, beside the floor (a Node process that only listens and greets):
 *
 *  - first reply: exec → the QMP greeting read and qmp_capabilities answered (-S -M none).
 *  - libvirt's probe: libvirt's probe command line with -daemonize and -pidfile (timed from exec
 *    until the command exits, the monitor is reached and the probe's questions are answered:
 *    the first session of reference/libvirt's probe transcript, up to the CPU model queries).
 *  - idle: the CPU a process uses in IDLE_MS once it has answered (-M none, running, no client
 *    asking), once per program.
 *
 * qmigd-qemu runs as QEMU 7.2 (QMIGD_QEMU_VERSION=7.2), the release of the QEMU beside it, so
 * like is compared with like; a second row shows it as its default release. (QEMU 10.0 here is
 * a wrapper into a chroot, whose start-up would include the chroot's: not measured.)
 *
 * Prints nothing; returns the numbers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { makeTempDir } from '../src/cli/migration-pair.js';
import { DEFAULT_PROFILE } from '../src/profiles/index.js';
import { QEMU, quantiles, sleep, type Quantiles } from './common.js';

const QMIGD_QEMU = resolve(import.meta.dirname, '..', '..', 'bin', 'qmigd-qemu');
export const STARTUP_RUNS = 15;

const DEVICES = [
  'virtio-blk-pci', 'virtio-net-pci', 'virtio-scsi-pci', 'virtio-net-ccw', 'virtio-scsi-ccw', 'vfio-pci', 'scsi-hd', 'ide-hd',
  'PIIX4_PM', 'usb-redir', 'usb-storage', 'kvm-pit', 'VGA', 'vmware-svga', 'qxl', 'virtio-gpu-pci', 'virtio-gpu-device',
  'ICH9-LPC', 'virtio-balloon-pci', 'virtio-balloon-ccw', 'virtio-balloon-device', 'intel-iommu', 'mch', 'nvdimm',
  'pcie-root-port', 'usb-host', 'vhost-user-fs-device', 'virtio-mem-pci', 'virtio-iommu-pci',
];
/** libvirt 9.0's probe questions, in its order (reference/libvirt/probe-qemu72.qmp.txt). */
const PROBE = [
  'query-version', 'query-target', 'query-qmp-schema', 'query-commands', 'query-kvm', 'qom-list-types',
  ...DEVICES.map((typename) => `device-list-properties ${JSON.stringify({ typename })}`),
  'qom-list-properties {"typename":"memory-backend-file"}', 'qom-list-properties {"typename":"memory-backend-memfd"}',
  'query-machines', 'qom-list-properties {"typename":"none-machine"}', 'query-cpu-definitions', 'query-tpm-models',
  'query-tpm-types', 'query-command-line-options', 'query-migrate-capabilities', 'query-sev-capabilities', 'query-sgx-capabilities',
].map((line) => {
  const space = line.indexOf(' ');
  return space < 0 ? `{"execute":"${line}"}` : `{"execute":"${line.slice(0, space)}","arguments":${line.slice(space + 1)}}`;
});

/** A Node process that listens on the socket and greets: what any Node daemon pays before its own code. */
const FLOOR_SCRIPT = `
const s = require('node:net').createServer((c) => { c.write('{"QMP": {}}\\r\\n'); c.on('data', () => c.write('{"return": {}}\\r\\n')); });
s.listen(process.argv[1]);`;

export interface StartupRow {
  program: string;
  /** What the summary compares: 'qemu', 'qmigd' (as QEMU's release), 'qmigd-default', 'floor'. */
  role: 'qemu' | 'qmigd' | 'qmigd-default' | 'floor';
  firstReply?: Quantiles;
  probe?: Quantiles;
  /** CPU (user + system) an idle process used in IDLE_MS, as a share of one core. */
  idleCpu?: number;
}

/** How long the idle process is watched, after its first answer and a second to settle. */
export const IDLE_MS = 10_000;

/** A QMP client that counts the replies (not events) it has read. */
class Counter {
  private buf = '';
  private replies = 0;
  private wake?: () => void;
  constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      this.buf += d;
      for (let i; (i = this.buf.indexOf('\r\n')) >= 0; this.buf = this.buf.slice(i + 2)) if (!this.buf.startsWith('{"timestamp"')) this.replies++;
      this.wake?.();
    });
    socket.on('close', () => this.wake?.());
  }
  async until(n: number): Promise<void> {
    while (this.replies < n) {
      if (this.socket.destroyed) throw new Error('the monitor closed');
      await new Promise<void>((r) => (this.wake = r));
    }
  }
}

async function connect(path: string, deadline: number, proc?: ChildProcess): Promise<net.Socket> {
  for (;;) {
    try {
      return await new Promise<net.Socket>((res, rej) => {
        const c = net.connect(path);
        c.once('connect', () => res(c)).once('error', rej);
      });
    } catch {
      if (performance.now() > deadline || (proc && proc.exitCode !== null)) throw new Error(`nothing listens on ${path}`);
      await sleep(1);
    }
  }
}

/**
 * Spawns `command` with `args` (its monitor on `sock`), negotiates, and hands the process's pid
 * to `answered` once qmp_capabilities is answered; the process is killed after.
 */
async function whenAnswered<T>(command: string[], args: string[], sock: string, env: NodeJS.ProcessEnv | undefined, answered: (pid: number) => T | Promise<T>): Promise<T> {
  const proc = spawn(command[0]!, [...command.slice(1), ...args], { stdio: 'ignore', env: env ?? process.env });
  const exited = new Promise((r) => proc.once('exit', r));
  try {
    const c = new Counter(await connect(sock, performance.now() + 10000, proc));
    await c.until(1);
    c.socket.write('{"execute":"qmp_capabilities"}\n');
    await c.until(2);
    try {
      return await answered(proc.pid!);
    } finally {
      c.socket.destroy();
    }
  } finally {
    proc.kill('SIGKILL');
    await exited;
  }
}

const monitorArgs = (sock: string): string[] => ['-M', 'none', '-display', 'none', '-nodefaults', '-qmp', `unix:${sock},server=on,wait=off`];

/** exec → greeting → qmp_capabilities answered, in ms. */
async function firstReply(command: string[], dir: string, env?: NodeJS.ProcessEnv): Promise<number> {
  const sock = join(dir, 'first.sock');
  rmSync(sock, { force: true });
  const t0 = performance.now();
  return whenAnswered(command, command[0] === process.execPath ? [sock] : ['-S', ...monitorArgs(sock)], sock, env, () => performance.now() - t0);
}

/** utime + stime of `pid`, in ms (/proc/PID/stat fields 14 and 15, in clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/**
 * The CPU a process that has answered and then waits (the guest running, nobody asking) uses:
 * what each of a hundred idle daemons on one host costs.
 */
async function idleCpu(command: string[], dir: string, env?: NodeJS.ProcessEnv): Promise<number> {
  const sock = join(dir, 'idle.sock');
  rmSync(sock, { force: true });
  return whenAnswered(command, monitorArgs(sock), sock, env, async (pid) => {
    await sleep(1000);
    const before = cpuMs(pid);
    await sleep(IDLE_MS);
    return (cpuMs(pid) - before) / IDLE_MS;
  });
}

/** libvirt's probe, exec to the last answer, in ms. */
async function probe(program: string, dir: string, env?: NodeJS.ProcessEnv): Promise<number> {
  const sock = join(dir, 'qmp.monitor');
  const pidfile = join(dir, 'qmp.pid');
  rmSync(sock, { force: true });
  rmSync(pidfile, { force: true });
  const t0 = performance.now();
  const proc = spawn(program, ['-S', '-no-user-config', '-nodefaults', '-nographic', '-machine', 'none,accel=tcg',
    '-qmp', `unix:${sock},server=on,wait=off`, '-pidfile', pidfile, '-daemonize'], { stdio: 'ignore', env: env ?? process.env });
  const status = await new Promise<number | null>((r) => proc.once('exit', r));
  if (status !== 0) throw new Error(`${program} -daemonize exited with ${status}`);
  const pid = Number(readFileSync(pidfile, 'utf8'));
  try {
    const c = new Counter(await connect(sock, t0 + 10000));
    c.socket.write(`{"execute":"qmp_capabilities"}\n${PROBE.join('\n')}\n`);
    await c.until(2 + PROBE.length);
    const ms = performance.now() - t0;
    c.socket.destroy();
    return ms;
  } finally {
    process.kill(pid, 'SIGKILL');
  }
}

export async function startupBench(withQemu: boolean): Promise<StartupRow[]> {
  const dir = makeTempDir('qmigd-bench-startup-');
  const rows: StartupRow[] = [];
  try {
    const as = (release: string): NodeJS.ProcessEnv => ({ ...process.env, QMIGD_QEMU_VERSION: release });
    const programs: Array<{ name: string; role: StartupRow['role']; bin: string; env?: NodeJS.ProcessEnv }> = [
      ...(withQemu ? [{ name: 'QEMU 7.2', role: 'qemu' as const, bin: QEMU }] : []),
      { name: 'qmigd-qemu as 7.2 (QMIGD_QEMU_VERSION=7.2)', role: 'qmigd', bin: QMIGD_QEMU, env: as('7.2') },
      { name: `qmigd-qemu as ${DEFAULT_PROFILE.id} (its default)`, role: 'qmigd-default', bin: QMIGD_QEMU, env: as(DEFAULT_PROFILE.id) },
    ];
    const floor: number[] = [];
    const first = programs.map((): number[] => []);
    const probes = programs.map((): number[] => []);
    // Interleaved, so that every program sees the same machine state.
    for (let i = 0; i < STARTUP_RUNS; i++) {
      floor.push(await firstReply([process.execPath, '-e', FLOOR_SCRIPT], dir));
      for (const [j, { bin, env }] of programs.entries()) {
        first[j]!.push(await firstReply([bin], dir, env));
        probes[j]!.push(await probe(bin, dir, env));
      }
    }
    rows.push({ program: 'Node floor (listen + greet)', role: 'floor', firstReply: quantiles(floor) });
    for (const [j, { name, role, bin, env }] of programs.entries()) {
      rows.push({ program: name, role, firstReply: quantiles(first[j]!), probe: quantiles(probes[j]!), idleCpu: await idleCpu([bin], dir, env) });
    }
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
