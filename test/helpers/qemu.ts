/** Starts a real qemu-system-x86_64 (-M none by default) with a QMP socket, where one is installed. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { tempDir } from './daemon.js';

export const QEMU = 'qemu-system-x86_64';

export function qemuInstalled(): boolean {
  return spawnSync(QEMU, ['--version'], { stdio: 'ignore' }).status === 0;
}

export interface RunningQemu {
  proc: ChildProcess;
  socket: string;
  stop: () => Promise<void>;
}

export async function startQemu(args: string[] = [], opts: { fd3?: number } = {}): Promise<RunningQemu> {
  return startEmulator(QEMU, (socket) => ['-M', 'none', '-display', 'none', '-nodefaults', '-qmp', `unix:${socket},server=on,wait=off`, ...args], opts);
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
