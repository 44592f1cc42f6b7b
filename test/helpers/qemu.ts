/** Starts a real qemu-system-x86_64 (-M none by default) with a QMP socket, where one is installed. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import type { ProfileId } from '../../src/profiles/index.js';
import { tempDir } from './daemon.js';

export const QEMU = 'qemu-system-x86_64';

/**
 * The real QEMU of each release qmigd can be: 7.2 is the machine's (Debian 12's
 * qemu-system-x86), 10.0 the one in the Debian 13 chroot that ../shared/tools/qemu-10.0.sh makes
 * (.ci/run makes it; QMIGD_QEMU_10_0 names another).
 */
export const QEMU_OF: Record<ProfileId, string> = {
  '7.2': QEMU,
  '10.0': process.env.QMIGD_QEMU_10_0 ?? '/opt/qemu-10.0/bin/qemu-system-x86_64',
};

/**
 * The root directory each release's QEMU sees: the machine's, or its chroot's (the script puts the
 * wrapper in DIR/bin and the chroot in DIR/root, with this machine's /dev bind-mounted into it).
 */
export const QEMU_ROOT_OF: Record<ProfileId, string> = {
  '7.2': '/',
  '10.0': join(dirname(dirname(QEMU_OF['10.0'])), 'root'),
};

const installed = new Map<string, boolean>();

export function qemuInstalled(release: ProfileId = '7.2'): boolean {
  const bin = QEMU_OF[release];
  if (!installed.has(bin)) installed.set(bin, spawnSync(bin, ['--version'], { stdio: 'ignore' }).status === 0);
  return installed.get(bin)!;
}

/** A skip reason where the release's QEMU is missing, else false. */
export function qemuSkip(release: ProfileId = '7.2'): string | false {
  if (qemuInstalled(release)) return false;
  return release === '7.2' ? 'qemu-system-x86_64 is not installed' : `QEMU ${release} is not installed (../shared/tools/qemu-10.0.sh makes it; .ci/run runs it)`;
}

export interface RunningQemu {
  proc: ChildProcess;
  socket: string;
  stop: () => Promise<void>;
}

export async function startQemu(args: string[] = [], opts: { fd3?: number; release?: ProfileId } = {}): Promise<RunningQemu> {
  return startEmulator(QEMU_OF[opts.release ?? '7.2'], (socket) => ['-M', 'none', '-display', 'none', '-nodefaults', '-qmp', `unix:${socket},server=on,wait=off`, ...args], opts);
}

/**
 * Runs `program` (QEMU, or qmigd-qemu given the same command line) with the arguments `args`
 * makes for a monitor socket in a fresh directory, and waits until that socket takes connections.
 */
export async function startEmulator(program: string, args: (socket: string) => string[], opts: { fd3?: number } = {}): Promise<RunningQemu> {
  const dir = tempDir();
  const socket = join(dir, 'qmp.sock');
  const proc = spawn(program, args(socket), {
    stdio: ['ignore', 'ignore', 'pipe', ...(opts.fd3 !== undefined ? [opts.fd3] : [])],
  });
  const exited = new Promise<void>((res) => proc.on('exit', () => res()));
  const deadline = Date.now() + 10000;
  // QEMU creates the socket file a moment before it listens: wait until a connection is taken.
  while (!existsSync(socket) || !(await accepts(socket))) {
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`${program} did not open its QMP socket`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    proc,
    socket,
    async stop() {
      proc.kill('SIGKILL');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function accepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}
