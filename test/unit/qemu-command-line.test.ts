/**
 * QEMU's command line as qmigd-qemu reads it: option strings (",," escapes, implied keys, bare
 * flags), -object in both of libvirt's spellings, and the command line libvirt builds for a
 * domain turned into the daemon's settings. (QEMU's own answers to the same command lines are
 * compared in test/integration/qemu-binary.test.ts.)
 */
import '../helpers/as-qemu-7.2.js';
import t from 'tap';
import { parseQemuCommandLine, QemuCliError } from '../../src/cli/qemu/command-line.js';
import { parseObject, parseOpts, sizeMiB } from '../../src/cli/qemu/opts.js';

t.test('option strings', async (t) => {
  t.same([...parseOpts('pc-i440fx-7.2,usb=off', 'type')], [['type', 'pc-i440fx-7.2'], ['usb', 'off']], 'a leading bare value is the implied key');
  t.same([...parseOpts('socket,id=c,path=/tmp/a,,b,server=on', 'backend')], [['backend', 'socket'], ['id', 'c'], ['path', '/tmp/a,b'], ['server', 'on']], ',, is a comma in a value');
  t.same([...parseOpts('guest=x,debug-threads', 'guest')], [['guest', 'x'], ['debug-threads', 'on']], 'a later bare key is key=on');
  t.same([...parseOpts('a=1=2')], [['a', '1=2']], 'only the first = splits');
  t.same([...parseOpts('')], [], 'nothing');
});

t.test('-object as JSON and as key=value say the same', async (t) => {
  const json = parseObject('{"qom-type":"memory-backend-ram","id":"pc.ram","size":67108864}');
  const keyval = parseObject('memory-backend-ram,id=pc.ram,size=67108864');
  t.same([...json].sort(), [...keyval].sort());
  t.throws(() => parseObject('{"qom-type":'), 'broken JSON is an error');
});

t.test('sizes: MiB by default, QEMU\'s suffixes', async (t) => {
  t.equal(sizeMiB('size', '64'), 64 << 20);
  t.equal(sizeMiB('size', '1G'), 1 << 30);
  t.equal(sizeMiB('size', '512k'), 512 << 10);
  t.equal(sizeMiB('size', '1.5G'), 1.5 * 2 ** 30);
  t.throws(() => sizeMiB('size', '64x'), /Parameter 'size' expects a non-negative number below 2\^64/);
  t.throws(() => sizeMiB('size', '-1'));
});

/** reference/libvirt's domain start, as libvirt 9.0 builds it (monitor on an inherited socket). */
const LIBVIRT_DOMAIN = [
  '-name', 'guest=vm1,debug-threads=on', '-S', '-object', '{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/var/lib/libvirt/qemu/domain-1-vm1/master-key.aes"}',
  '-machine', 'pc-i440fx-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram', '-accel', 'tcg', '-m', '64',
  '-object', '{"qom-type":"memory-backend-ram","id":"pc.ram","size":67108864}', '-overcommit', 'mem-lock=off',
  '-smp', '1,sockets=1,cores=1,threads=1', '-uuid', 'C0FFEE00-1234-4321-abcd-0123456789AB', '-display', 'none',
  '-no-user-config', '-nodefaults', '-chardev', 'socket,id=charmonitor,fd=23,server=on,wait=off',
  '-mon', 'chardev=charmonitor,id=monitor,mode=control', '-rtc', 'base=utc', '-no-shutdown', '-no-acpi',
  '-boot', 'strict=on', '-audiodev', '{"id":"audio1","driver":"none"}', '-msg', 'timestamp=on', '-incoming', 'defer',
];

t.test('libvirt\'s domain command line', async (t) => {
  const cl = parseQemuCommandLine(LIBVIRT_DOMAIN);
  t.equal(cl.action, 'run');
  t.equal(cl.name, 'vm1');
  t.equal(cl.paused, true);
  t.equal(cl.machine.name, 'pc-i440fx-7.2');
  t.equal(cl.memoryBytes, 64 << 20);
  t.equal(cl.ramId, 'pc.ram', 'the RAM block is named after the memory backend');
  t.equal(cl.uuid, 'c0ffee00-1234-4321-abcd-0123456789ab', 'QEMU prints UUIDs in lower case');
  t.equal(cl.cpus.cpus, 1);
  t.equal(cl.noShutdown, true);
  t.equal(cl.acpi, false);
  t.equal(cl.incoming, 'defer');
  t.same(cl.qmp, [{ kind: 'unix', path: '', fd: 23, server: true, wait: false, exclusive: true, label: 'charmonitor', text: 'chardev charmonitor', option: '-chardev socket,id=charmonitor,fd=23,server=on,wait=off' }]);
  t.ok(cl.ignored.some((o) => o.startsWith('-object {"qom-type":"secret"')), 'objects other than memory backends are ignored');
});

t.test('the probe\'s command line', async (t) => {
  const cl = parseQemuCommandLine(['-S', '-no-user-config', '-nodefaults', '-nographic', '-machine', 'none,accel=kvm:tcg',
    '-qmp', 'unix:/run/qmp.monitor,server=on,wait=off', '-pidfile', '/run/qmp.pid', '-daemonize']);
  t.equal(cl.machine.name, 'none');
  t.equal(cl.cpus.cpus, 0, '-M none has no vCPU');
  t.equal(cl.daemonize, true);
  t.equal(cl.pidfile, '/run/qmp.pid');
  t.same(cl.qmp.map((q) => [q.kind, q.kind === 'unix' && q.path, q.exclusive]), [['unix', '/run/qmp.monitor', true]], 'a QEMU monitor serves one client at a time');
});

t.test('memory backends', async (t) => {
  const file = parseQemuCommandLine(['-M', 'pc,memory-backend=m', '-object', 'memory-backend-file,id=m,size=32M,mem-path=/dev/shm/g,,1,prealloc=on']);
  t.equal(file.memoryBytes, 32 << 20);
  t.equal(file.memoryFile, '/dev/shm/g,1');
  t.equal(file.memPrealloc, true);
  t.equal(parseQemuCommandLine(['-M', 'q35']).ramId, 'pc.ram', 'default RAM id of a PC');
  t.equal(parseQemuCommandLine(['-M', 'none']).ramId, 'ram');
  t.throws(() => parseQemuCommandLine(['-M', 'pc,memory-backend=m']), new QemuCliError("Memory backend 'm' not found"));
});

t.test('-smp fills in what it omits as QEMU 7.2 machines do', async (t) => {
  const topo = (smp: string): number[] => {
    const c = parseQemuCommandLine(['-smp', smp]).cpus;
    return [c.cpus, c.maxCpus, c.sockets, c.dies, c.cores, c.threads];
  };
  t.same(topo('4'), [4, 4, 1, 1, 4, 1], 'cores before sockets');
  t.same(topo('2,maxcpus=8,sockets=2'), [2, 8, 2, 1, 4, 1]);
  t.same(topo('sockets=2'), [2, 2, 2, 1, 1, 1]);
  t.same(topo('4,sockets=2,cores=1'), [4, 4, 2, 1, 1, 2], 'threads from the rest');
  t.throws(() => topo('4,cores=3'), /product of the hierarchy must match maxcpus/);
});

t.test('options: unknown, missing arguments, -- spellings', async (t) => {
  t.throws(() => parseQemuCommandLine(['-bogus']), new QemuCliError('-bogus: invalid option'));
  t.throws(() => parseQemuCommandLine(['-m']), new QemuCliError('-m: requires an argument'));
  t.equal(parseQemuCommandLine(['--name', 'x']).name, 'x', '--name is -name');
  t.equal(parseQemuCommandLine(['-machine', 'help']).action, 'machine-help');
  t.equal(parseQemuCommandLine(['-version']).action, 'version');
  t.same(parseQemuCommandLine(['disk.img']).ignored, ['disk.img'], 'a bare disk image is hardware qmigd does not emulate');
});

t.test('accelerators: the first that starts, with QEMU\'s lines on the way', async (t) => {
  type Host = { kvmUnavailable: () => string | undefined };
  const noKvm: Host = { kvmUnavailable: () => 'No such file or directory' };
  const kvm: Host = { kvmUnavailable: () => undefined };
  const accel = (args: string[], env: Host): unknown[] => {
    const cl = parseQemuCommandLine(args, env);
    return [cl.accelerator, cl.messages];
  };
  t.same(accel([], kvm), ['tcg', []], 'TCG unless asked');
  t.same(accel(['-M', 'none,accel=kvm:tcg'], kvm), ['kvm', []]);
  t.same(accel(['-enable-kvm'], kvm), ['kvm', []]);
  t.same(accel(['-accel', 'tcg', '-accel', 'kvm'], kvm), ['tcg', []], 'in order');
  t.same(accel(['-M', 'none,accel=kvm:tcg'], noKvm), ['tcg', [
    { bare: 'Could not access KVM kernel module: No such file or directory' },
    { prefixed: 'failed to initialize kvm: No such file or directory' },
    { prefixed: 'falling back to tcg' },
  ]]);
  t.throws(() => parseQemuCommandLine(['-accel', 'kvm'], noKvm), new QemuCliError('-accel kvm: failed to initialize kvm: No such file or directory'));
  t.throws(() => parseQemuCommandLine(['-accel', 'xen'], noKvm), new QemuCliError('-accel xen: invalid accelerator xen'));
});
