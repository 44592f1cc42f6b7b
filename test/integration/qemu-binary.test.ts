/**
 * bin/qmigd-qemu against qemu-system-x86_64 7.2, given the same command lines: the same errors
 * for bad ones, and for the command line libvirt builds for a domain, the same answers to what
 * libvirt asks at start (the machine, its QOM types and tree, its CPUs and chardevs, reset).
 * Skipped where QEMU is not installed (.ci/run installs it).
 */
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { REPO, tempDir } from '../helpers/daemon.js';
import { QEMU, qemuInstalled, startEmulator } from '../helpers/qemu.js';
import { QmpClient, type Msg } from '../helpers/qmp-client.js';

const QMIGD_QEMU = join(REPO, 'bin', 'qmigd-qemu');
const skip = !qemuInstalled() && 'qemu-system-x86_64 is not installed';

/** What a program prints and returns for a command line that must fail at once. */
function failure(program: string, args: string[]): { status: number | null; message: string } {
  const r = spawnSync(program, ['-display', 'none', '-nodefaults', ...args], { encoding: 'utf8', timeout: 10000 });
  return { status: r.status, message: r.stderr.replace(/^[^:]*: /gm, '') };
}

t.test('a bad command line gets QEMU\'s message and status', { skip }, async (t) => {
  const bad = [
    ['-bogus'], ['-m'], ['-m', '64x'], ['-M', 'nope'], ['-uuid', 'abc'], ['-smp', '300'], ['-accel', 'xen'],
    ['-machine', 'pc,memory-backend=foo'], ['-mon', 'chardev=x,mode=control'], ['-object', 'memory-backend-ram,size=64M'],
    ['-M', 'pc', '-m', '64', '-object', 'memory-backend-ram,id=r,size=32M', '-machine', 'memory-backend=r'],
    ['-smp', 'x'], ['-smp', '4,cores=3'], ['-smp', '8,maxcpus=4'], ['-smp', '2,sockets=2,cores=2'], ['-M', 'none', '-smp', '2'],
  ];
  for (const args of bad) {
    const qemu = failure(QEMU, args);
    t.equal(qemu.status, 1, `QEMU refuses ${args.join(' ')}`);
    t.same(failure(QMIGD_QEMU, args), qemu, args.join(' '));
  }
});

/**
 * Runs `args` on a host without KVM: in a mount namespace of its own whose /dev has only null,
 * zero, random and urandom (root only).
 */
function withoutKvm(program: string, args: string[]): { status: number | null; message: string } {
  const script = [
    'set -e', 'd=$(mktemp -d)', 'mount --bind /dev "$d"', 'mount -t tmpfs none /dev',
    'for n in null zero random urandom; do touch /dev/$n; mount --bind "$d/$n" /dev/$n; done',
    'umount -l "$d"', 'rmdir "$d"', 'exec "$@"',
  ].join('\n');
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', program, '-display', 'none', '-nodefaults', ...args], { encoding: 'utf8', timeout: 10000 });
  return { status: r.status, message: r.stderr.replace(/^[^: ]*qemu[^:]*: /gm, '') };
}

t.test('without /dev/kvm: the same refusals, and the same fall back to TCG', { skip: skip || (process.getuid?.() !== 0 && 'needs root for a mount namespace') }, async (t) => {
  const dir = tempDir();
  for (const args of [['-accel', 'kvm'], ['-enable-kvm'], ['-machine', 'accel=kvm'], ['-M', 'none,accel=kvm:tcg'], ['-accel', 'kvm', '-accel', 'tcg']]) {
    const pidfile = join(dir, 'pid');
    // -daemonize: whatever starts returns once it runs (then it is killed), with what it printed.
    const run = (program: string): { status: number | null; message: string } => {
      rmSync(pidfile, { force: true });
      const r = withoutKvm(program, [...args, '-S', '-daemonize', '-pidfile', pidfile]);
      if (existsSync(pidfile)) process.kill(Number(readFileSync(pidfile, 'utf8')), 'SIGKILL');
      return r;
    };
    const qemu = run(QEMU);
    t.match(qemu.message, /failed to initialize kvm/, `QEMU has no KVM: ${args.join(' ')}`);
    t.same(run(QMIGD_QEMU), qemu, args.join(' '));
  }
  rmSync(dir, { recursive: true, force: true });
});

t.test('query-kvm: the accelerator QEMU takes on this host', { skip }, async (t) => {
  for (const accel of ['kvm:tcg', 'tcg']) {
    const args = (socket: string): string[] => ['-M', `none,accel=${accel}`, '-S', '-display', 'none', '-nodefaults', '-qmp', `unix:${socket},server=on,wait=off`];
    const [qemu, qmigd] = await both(args, (c) => c.ok('query-kvm'));
    t.same(qmigd, qemu, `accel=${accel}: ${JSON.stringify(qemu)}`);
  }
});

t.test('-version and -machine help name the machines qmigd has as QEMU does', { skip }, async (t) => {
  const run = (program: string, args: string[]): string => spawnSync(program, args, { encoding: 'utf8' }).stdout;
  t.match(run(QMIGD_QEMU, ['-version']), /^QEMU emulator version 7\.2\.\d+ /);
  const qemuHelp = run(QEMU, ['-machine', 'help']).split('\n');
  for (const line of run(QMIGD_QEMU, ['-machine', 'help']).trimEnd().split('\n')) t.ok(qemuHelp.includes(line), `QEMU prints "${line}"`);
});

/** The domain command line of reference/libvirt (a pc-i440fx-7.2 guest), with a path monitor. */
const domain = (uuid: string) => (socket: string): string[] => [
  '-name', 'guest=probe,debug-threads=on', '-S',
  '-machine', 'pc-i440fx-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram', '-accel', 'tcg', '-m', '64',
  '-object', '{"qom-type":"memory-backend-ram","id":"pc.ram","size":67108864}', '-overcommit', 'mem-lock=off',
  '-smp', '2,sockets=2,cores=1,threads=1', '-uuid', uuid, '-display', 'none', '-no-user-config', '-nodefaults',
  '-chardev', `socket,id=charmonitor,path=${socket},server=on,wait=off`, '-mon', 'chardev=charmonitor,id=monitor,mode=control',
  '-rtc', 'base=utc', '-no-shutdown', '-no-acpi', '-boot', 'strict=on', '-msg', 'timestamp=on',
];

/** QEMU's answer and qmigd's, with what is the host's own (thread ids, the socket path) masked. */
async function both(args: (socket: string) => string[], ask: (c: QmpClient) => Promise<unknown>): Promise<[unknown, unknown]> {
  const answers: unknown[] = [];
  for (const program of [QEMU, QMIGD_QEMU]) {
    const emulator = await startEmulator(program, args);
    const client = await QmpClient.unix(emulator.socket);
    try {
      await client.negotiate();
      answers.push(JSON.parse(JSON.stringify(await ask(client)).replaceAll(emulator.socket, 'SOCKET').replace(/"thread-id":\d+/g, '"thread-id":0')));
    } finally {
      client.close();
      await emulator.stop();
    }
  }
  return answers as [unknown, unknown];
}

t.test('libvirt\'s domain command line: the same answers to what libvirt asks', { skip }, async (t) => {
  const uuid = randomUUID();
  const [qemu, qmigd] = await both(domain(uuid), async (c) => ({
    status: await c.ok('query-status'),
    name: await c.ok('query-name'),
    uuid: await c.ok('query-uuid'),
    target: await c.ok('query-target'),
    cpus: await c.ok('query-cpus-fast'),
    chardev: await c.ok('query-chardev'),
    block: await c.ok('query-block'),
    nodes: await c.ok('query-named-block-nodes', { flat: true }),
    peripheral: await c.ok('qom-list', { path: '/machine/peripheral' }),
    machine: ((await c.ok('query-machines')) as Msg[]).filter((m) => m.name === 'pc-i440fx-7.2'),
    memoryBackendFile: await c.ok('qom-list-properties', { typename: 'memory-backend-file' }),
    noneMachine: await c.ok('qom-list-properties', { typename: 'none-machine' }),
    badPath: await c.cmd('qom-list', { path: '/nope' }),
    notADevice: await c.cmd('device-list-properties', { typename: 'memory-backend-ram' }),
    unknownDevice: await c.cmd('device-list-properties', { typename: 'no-such-device' }),
  }));
  t.same(qmigd, qemu);
  t.equal((qmigd as Msg).uuid && ((qmigd as Msg).uuid as Msg).UUID, uuid, 'the -uuid given');
});

t.test('every QOM type qmigd lists is QEMU\'s, with its parent; tcg-accel among them', { skip }, async (t) => {
  const [qemu, qmigd] = (await both(domain(randomUUID()), (c) => c.ok('qom-list-types', { abstract: true }))) as [Msg[], Msg[]];
  const qemuTypes = new Map(qemu.map((ty) => [ty.name, ty]));
  for (const ty of qmigd) t.same(ty, qemuTypes.get(ty.name as string), String(ty.name));
  t.ok(qmigd.some((ty) => ty.name === 'tcg-accel'), 'libvirt needs tcg-accel for virt type qemu');
});

t.test('-smp: the same vCPUs, with the same ids and QOM paths', { skip }, async (t) => {
  for (const smp of ['1', '3', 'maxcpus=4', '4,sockets=2', '4,sockets=1,cores=2,threads=2', '4,sockets=2,dies=2,cores=1', '2,maxcpus=8,sockets=2']) {
    for (const machine of ['pc', 'q35', 'none']) {
      if (machine === 'none' && smp !== '1') continue;
      const args = (socket: string): string[] => ['-M', machine, '-S', '-display', 'none', '-nodefaults', '-smp', smp, '-qmp', `unix:${socket},server=on,wait=off`];
      const [qemu, qmigd] = await both(args, (c) => c.ok('query-cpus-fast'));
      t.same(qmigd, qemu, `-M ${machine} -smp ${smp}`);
    }
  }
});

t.test('system_reset before the guest runs: the same event, still prelaunch', { skip }, async (t) => {
  const [qemu, qmigd] = await both(domain(randomUUID()), async (c) => {
    await c.ok('system_reset');
    const reset = await c.waitEvent('RESET');
    return { reset: reset.data, status: await c.ok('query-status') };
  });
  t.same(qmigd, qemu);
});

t.test('-daemonize returns once the monitor listens and the pid file names the daemon', async (t) => {
  const dir = tempDir();
  const socket = join(dir, 'qmp.monitor');
  const pidfile = join(dir, 'qmp.pid');
  // libvirt's probe: it waits for this command to exit 0, then connects at once.
  const r = spawnSync(QMIGD_QEMU, ['-S', '-no-user-config', '-nodefaults', '-nographic', '-machine', 'none,accel=kvm:tcg',
    '-qmp', `unix:${socket},server=on,wait=off`, '-pidfile', pidfile, '-daemonize'], { encoding: 'utf8', timeout: 10000 });
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout + r.stderr, '', 'nothing printed');
  t.ok(existsSync(pidfile));
  const pid = Number(readFileSync(pidfile, 'utf8'));
  const client = await QmpClient.unix(socket);
  try {
    await client.negotiate();
    t.same(await client.ok('query-cpus-fast'), [], '-M none has no CPU');
  } finally {
    client.close();
    process.kill(pid, 'SIGKILL');
  }
});

t.test('system_powerdown: a guest with ACPI powers off; -no-shutdown stops it, else the process ends', async (t) => {
  for (const noShutdown of [true, false]) {
    const emulator = await startEmulator(QMIGD_QEMU, (socket) => ['-M', 'pc', '-m', '16', '-qmp', `unix:${socket},server=on,wait=off`, ...(noShutdown ? ['-no-shutdown'] : [])]);
    const client = await QmpClient.unix(emulator.socket);
    try {
      await client.negotiate();
      await client.ok('system_powerdown');
      await client.waitEvent('POWERDOWN');
      t.same((await client.waitEvent('SHUTDOWN')).data, { guest: true, reason: 'guest-shutdown' });
      if (noShutdown) t.same(await client.ok('query-status'), { status: 'shutdown', singlestep: false, running: false });
      else {
        const { proc } = emulator;
        t.equal(await new Promise((res) => (proc.exitCode !== null ? res(proc.exitCode) : proc.once('exit', res))), 0, 'exits 0');
      }
    } finally {
      client.close();
      await emulator.stop();
    }
  }
});

t.test('-no-acpi: POWERDOWN is sent and the guest keeps running', async (t) => {
  const emulator = await startEmulator(QMIGD_QEMU, (socket) => ['-M', 'pc', '-m', '16', '-no-acpi', '-qmp', `unix:${socket},server=on,wait=off`]);
  const client = await QmpClient.unix(emulator.socket);
  try {
    await client.negotiate();
    await client.ok('system_powerdown');
    await client.waitEvent('POWERDOWN');
    await new Promise((r) => setTimeout(r, 300));
    t.same(await client.ok('query-status'), { status: 'running', singlestep: false, running: true });
    t.notOk(client.events.some((e) => e.event === 'SHUTDOWN'));
  } finally {
    client.close();
    await emulator.stop();
  }
});
