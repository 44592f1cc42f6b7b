/**
 * bin/qmigd-qemu-X.Y against the real qemu-system-x86_64 of each release it can be (7.2 and
 * 10.0), given the same command lines: the same errors for bad ones, and for the command line
 * libvirt builds for a domain, the same answers to what libvirt asks at start (the machine, its
 * QOM types and tree, its CPUs and chardevs, reset). Each release is skipped where its QEMU is not
 * installed (.ci/run installs both).
 */
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import net from 'node:net';
import t from 'tap';
import { REPO, tempDir } from '../helpers/daemon.js';
import { PROFILES, type QemuProfile } from '../../src/profiles/index.js';
import { QEMU_OF, QEMU_ROOT_OF, qemuSkip, startEmulator } from '../helpers/qemu.js';
import { QmpClient, type Msg } from '../helpers/qmp-client.js';

const byName = (a: Msg, b: Msg): number => String(a.name).localeCompare(String(b.name));

/** The default release's qmigd-qemu, for the tests that need no QEMU beside it. */
// The tests below hold qmigd-qemu to QEMU 7.2's behaviour (-no-acpi, query-status's singlestep).
const QMIGD_QEMU = join(REPO, 'bin', 'qmigd-qemu-7.2');

/** What a program prints and returns for a command line that must fail at once. */
function failure(program: string, args: string[]): { status: number | null; message: string } {
  const r = spawnSync(program, ['-display', 'none', '-nodefaults', ...args], { encoding: 'utf8', timeout: 10000 });
  return { status: r.status, message: r.stderr.replace(/^[^:]*: /gm, '') };
}

/** The differential tests of one release: its QEMU and qmigd-qemu-X.Y, the same command lines. */
function differential(profile: QemuProfile): void {
  const release = profile.id;
  const qemu = QEMU_OF[release];
  const qmigdQemu = join(REPO, 'bin', `qmigd-qemu-${release}`);
  const defaultPc = profile.machines.find((m) => m.isDefault)!.name;

  t.test(`QEMU ${release}: a bad command line gets QEMU's message and status`, { skip: qemuSkip(release) }, async (t) => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    t.teardown(() => holder.close());
    const taken = (holder.address() as net.AddressInfo).port;
    // A shared memory-backend-file shorter than the RAM.
    const short = join(tempDir(), 'short.ram');
    writeFileSync(short, Buffer.alloc(1 << 20));
    const bad = [
      ['-M', 'none,memory-backend=m', '-object', `memory-backend-file,id=m,size=64M,mem-path=${short},share=on`, '-m', '64M'],
      ['-bogus'], ['-m'], ['-m', '64x'], ['-M', 'nope'], ['-uuid', 'abc'], ['-smp', '300'], ['-accel', 'xen'],
      ['-machine', 'pc,memory-backend=foo'], ['-mon', 'chardev=x,mode=control'], ['-object', 'memory-backend-ram,size=64M'],
      ['-M', 'pc', '-m', '64', '-object', 'memory-backend-ram,id=r,size=32M', '-machine', 'memory-backend=r'],
      ['-smp', 'x'], ['-smp', '4,cores=3'], ['-smp', '8,maxcpus=4'], ['-smp', '2,sockets=2,cores=2'], ['-M', 'none', '-smp', '2'],
      ['-smp', '4,modules=3'], ['-smp', '4,clusters=2'], ['-smp', '4,books=2'], ['-smp', '4,drawers=2'], ['-smp', '4,foo=1'], ['-no-acpi', '-smp', '4,dies=3'],
      // Monitors that cannot listen: a socket in a missing directory, a port that is taken.
      ['-M', 'none', '-qmp', `unix:${join(tempDir(), 'missing', 'qmp.sock')},server=on,wait=off`],
      ['-M', 'none', '-chardev', `socket,id=mon0,path=${join(tempDir(), 'missing', 'mon.sock')},server=on,wait=off`, '-mon', 'chardev=mon0,mode=control'],
      ['-M', 'none', '-qmp', `tcp:127.0.0.1:${taken},server=on,wait=off`],
    ];
    for (const args of bad) {
      const fromQemu = failure(qemu, args);
      t.equal(fromQemu.status, 1, `QEMU refuses ${args.join(' ')}`);
      t.same(failure(qmigdQemu, args), fromQemu, args.join(' '));
    }
  });

  /**
   * Runs `args` on a host without KVM: in a mount namespace of its own whose /dev has only null,
   * zero, random and urandom (root only).
   */
  function withoutKvm(program: string, args: string[]): { status: number | null; message: string } {
    // A QEMU in a chroot sees the machine's /dev through a bind mount there: it gets the same.
    const chrootDev = QEMU_ROOT_OF[release] === '/' ? [] : [`mount --bind /dev "${join(QEMU_ROOT_OF[release], 'dev')}"`];
    const script = [
      'set -e', 'd=$(mktemp -d)', 'mount --bind /dev "$d"', 'mount -t tmpfs none /dev',
      'for n in null zero random urandom; do touch /dev/$n; mount --bind "$d/$n" /dev/$n; done',
      ...chrootDev, 'umount -l "$d"', 'rmdir "$d"', 'exec "$@"',
    ].join('\n');
    const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script, 'sh', program, '-display', 'none', '-nodefaults', ...args], { encoding: 'utf8', timeout: 10000 });
    return { status: r.status, message: r.stderr.replace(/^[^: ]*qemu[^:]*: /gm, '') };
  }

  t.test(`QEMU ${release}: without /dev/kvm: the same refusals, and the same fall back to TCG`, { skip: qemuSkip(release) || (process.getuid?.() !== 0 && 'needs root for a mount namespace') }, async (t) => {
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
      const fromQemu = run(qemu);
      t.match(fromQemu.message, /failed to initialize kvm/, `QEMU has no KVM: ${args.join(' ')}`);
      t.same(run(qmigdQemu), fromQemu, args.join(' '));
    }
    rmSync(dir, { recursive: true, force: true });
  });

  t.test(`QEMU ${release}: query-kvm: the accelerator QEMU takes on this host`, { skip: qemuSkip(release) }, async (t) => {
    for (const accel of ['kvm:tcg', 'tcg']) {
      const args = (socket: string): string[] => ['-M', `none,accel=${accel}`, '-S', '-display', 'none', '-nodefaults', '-qmp', `unix:${socket},server=on,wait=off`];
      const [qemu, qmigd] = await both(args, (c) => c.ok('query-kvm'));
      t.same(qmigd, qemu, `accel=${accel}: ${JSON.stringify(qemu)}`);
    }
  });

  t.test(`QEMU ${release}: -version and -machine help name the machines qmigd has as QEMU does`, { skip: qemuSkip(release) }, async (t) => {
    const run = (program: string, args: string[]): string => spawnSync(program, args, { encoding: 'utf8' }).stdout;
    const { major, minor } = profile.version;
    t.match(run(qmigdQemu, ['-version']), new RegExp(`^QEMU emulator version ${major}\\.${minor}\\.\\d+ `));
    t.match(run(qemu, ['-version']), new RegExp(`^QEMU emulator version ${major}\\.${minor}\\.\\d+ `), 'the QEMU compared with is that release');
    const qemuHelp = run(qemu, ['-machine', 'help']).split('\n');
    const ours = run(qmigdQemu, ['-machine', 'help']).trimEnd().split('\n');
    for (const line of ours) t.ok(qemuHelp.includes(line), `QEMU prints "${line}"`);
    // In QEMU's order too (each family newest first as QEMU sorts the names, then none).
    const at = ours.map((line) => qemuHelp.indexOf(line));
    t.same(at, [...at].sort((x, y) => x - y), 'in the order QEMU prints them');
  });

  /**
   * The domain command line of reference/libvirt (a guest of the release's default PC), with a
   * path monitor; where the release has no -no-acpi, ACPI is switched off as libvirt then does it.
   */
  const noAcpiOption = profile.options.withoutArgument.has('-no-acpi');
  const domain = (uuid: string) => (socket: string): string[] => [
    '-name', 'guest=probe,debug-threads=on', '-S',
    '-machine', `${defaultPc},usb=off,dump-guest-core=off,memory-backend=pc.ram${noAcpiOption ? '' : ',acpi=off'}`, '-accel', 'tcg', '-m', '64',
    '-object', '{"qom-type":"memory-backend-ram","id":"pc.ram","size":67108864}', '-overcommit', 'mem-lock=off',
    '-smp', '2,sockets=2,cores=1,threads=1', '-uuid', uuid, '-display', 'none', '-no-user-config', '-nodefaults',
    '-chardev', `socket,id=charmonitor,path=${socket},server=on,wait=off`, '-mon', 'chardev=charmonitor,id=monitor,mode=control',
    '-rtc', 'base=utc', '-no-shutdown', ...(noAcpiOption ? ['-no-acpi'] : []), '-boot', 'strict=on', '-msg', 'timestamp=on',
  ];

  /** QEMU's answer and qmigd's, with what is the host's own (thread ids, the socket path) masked. */
  async function both(args: (socket: string) => string[], ask: (c: QmpClient) => Promise<unknown>): Promise<[unknown, unknown]> {
    const answers: unknown[] = [];
    for (const program of [qemu, qmigdQemu]) {
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

  t.test(`QEMU ${release}: libvirt's domain command line: the same answers to what libvirt asks`, { skip: qemuSkip(release) }, async (t) => {
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
      machines: ((await c.ok('query-machines')) as Msg[]).filter((m) => profile.machines.some((ours) => ours.name === m.name)).sort(byName),
      // Where the release has compat-props (10.0), each machine type's; 7.2 refuses the argument.
      compatProps: await c.cmd('query-machines', { 'compat-props': true }).then((r) =>
        'return' in r ? (r.return as Msg[]).filter((m) => profile.machines.some((ours) => ours.name === m.name)).sort(byName) : r),
      memoryBackendFile: await c.ok('qom-list-properties', { typename: 'memory-backend-file' }),
      noneMachine: await c.ok('qom-list-properties', { typename: 'none-machine' }),
      badPath: await c.cmd('qom-list', { path: '/nope' }),
      notADevice: await c.cmd('device-list-properties', { typename: 'memory-backend-ram' }),
      unknownDevice: await c.cmd('device-list-properties', { typename: 'no-such-device' }),
    }));
    t.same(qmigd, qemu);
    t.equal((qmigd as Msg).uuid && ((qmigd as Msg).uuid as Msg).UUID, uuid, 'the -uuid given');
  });

  t.test(`QEMU ${release}: every QOM type qmigd lists is QEMU's, with its parent; tcg-accel among them`, { skip: qemuSkip(release) }, async (t) => {
    const [qemu, qmigd] = (await both(domain(randomUUID()), (c) => c.ok('qom-list-types', { abstract: true }))) as [Msg[], Msg[]];
    const qemuTypes = new Map(qemu.map((ty) => [ty.name, ty]));
    for (const ty of qmigd) t.same(ty, qemuTypes.get(ty.name as string), String(ty.name));
    t.ok(qmigd.some((ty) => ty.name === 'tcg-accel'), 'libvirt needs tcg-accel for virt type qemu');
  });

  t.test(`QEMU ${release}: -smp: the same vCPUs, with the same ids and QOM paths`, { skip: qemuSkip(release) }, async (t) => {
    const modules = profile.smp.levels.includes('modules') ? ['8,sockets=2,modules=2,cores=2', '8,dies=2,modules=2,threads=2', '6,modules=3'] : [];
    for (const smp of ['1', '3', 'maxcpus=4', '4,sockets=2', '4,sockets=1,cores=2,threads=2', '4,sockets=2,dies=2,cores=1', '2,maxcpus=8,sockets=2', '4,clusters=1', ...modules]) {
      for (const machine of ['pc', 'q35', 'none']) {
        if (machine === 'none' && smp !== '1') continue;
        const args = (socket: string): string[] => ['-M', machine, '-S', '-display', 'none', '-nodefaults', '-smp', smp, '-qmp', `unix:${socket},server=on,wait=off`];
        const [qemu, qmigd] = await both(args, (c) => c.ok('query-cpus-fast'));
        t.same(qmigd, qemu, `-M ${machine} -smp ${smp}`);
      }
    }
  });

  t.test(`QEMU ${release}: system_reset before the guest runs: the same event, still prelaunch`, { skip: qemuSkip(release) }, async (t) => {
    const [qemu, qmigd] = await both(domain(randomUUID()), async (c) => {
      await c.ok('system_reset');
      const reset = await c.waitEvent('RESET');
      return { reset: reset.data, status: await c.ok('query-status') };
    });
    t.same(qmigd, qemu);
  });
}

for (const profile of PROFILES) differential(profile);

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
