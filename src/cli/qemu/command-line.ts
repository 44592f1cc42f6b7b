/**
 * QEMU's command line (as qemu-system-x86_64 7.2 reads it) → the daemon's configuration, so that
 * whatever starts QEMU (libvirt's <emulator>, a script) can start qmigd instead. Options that
 * carry meaning for an emulated guest are honoured; those about hardware qmigd does not emulate
 * are accepted and ignored (a debug line each); an option QEMU does not know gets QEMU's own
 * message. Errors are QemuCliError, whose message is what QEMU prints after "PROG: ".
 */
import { cpuTopology, NO_CPUS, SmpError, type CpuTopology } from '../../guest/cpu-topology.js';
import { defaultMachine, findMachine, machines, type Accelerator, type MachineType } from '../../guest/machines.js';
import { parseQmpSpec, SpecError, type QmpSpec } from '../../qmp/transports/spec.js';
import { AccelError, chooseAccelerator, kvmUnavailable, type AccelRequest, type Message } from './accelerator.js';
import { parseSandbox, NO_SANDBOX, type Sandbox } from '../sandbox.js';
import { optBool, OptsError, parseObject, parseOpts, sizeBytes, sizeMiB, type Opts } from './opts.js';
import { activeProfile } from '../../profiles/index.js';
import { applyGlobals, GlobalError, machineGlobals, parseGlobal, type GlobalSetting, type MigrationGlobals } from '../../migration/globals.js';

/** QEMU's message for a command line it refuses, after what it printed on the way (`before`). */
export class QemuCliError extends Error {
  constructor(message: string, readonly before: Message[] = []) {
    super(message);
  }
}

/** What the command line asks for, before it becomes a daemon. */
export interface QemuCommandLine {
  action: 'run' | 'version' | 'help' | 'machine-help';
  paused: boolean;
  name?: string;
  uuid: string;
  machine: MachineType;
  /** The migration object's properties: the release's, the machine type's compat, then -global's. */
  migrationGlobals: MigrationGlobals;
  memoryBytes: number;
  ramId: string;
  /** A memory-backend-file's mem-path: the guest's RAM starts as its contents when it exists. */
  memoryFile?: string;
  /** The memory-backend-file has share=on: memoryFile is the RAM, mapped shared. */
  memoryShare: boolean;
  memPrealloc: boolean;
  cpus: CpuTopology;
  qmp: QmpSpec[];
  incoming?: string;
  sandbox: Sandbox;
  pidfile?: string;
  daemonize: boolean;
  noShutdown: boolean;
  /** The machine has ACPI (its guest powers off on system_powerdown): unless -no-acpi or acpi=off. */
  acpi: boolean;
  accelerator: Accelerator;
  /** What QEMU prints while it starts (choosing an accelerator), to print the same. */
  messages: Message[];
  /** The options accepted but ignored, for a debug line each. */
  ignored: string[];
}

const ZERO_UUID = '00000000-0000-0000-0000-000000000000';
const DEFAULT_RAM = 128 << 20;

/** Options about hardware qmigd does not emulate (or about a host it does not touch): accepted, ignored. */
const IGNORED = new Set([
  '-cpu', '-rtc', '-boot', '-device', '-audiodev', '-audio', '-msg', '-overcommit', '-display', '-nographic', '-nodefaults',
  '-no-user-config', '-no-hpet', '-vga', '-serial', '-parallel', '-usb', '-usbdevice', '-k',
  '-vnc', '-spice', '-drive', '-blockdev', '-netdev', '-nic', '-net', '-fsdev', '-virtfs', '-numa', '-smbios',
  '-fw_cfg', '-bios', '-kernel', '-initrd', '-append', '-dtb', '-L', '-D', '-d', '-trace', '-no-reboot',
  '-full-screen', '-snapshot', '-watchdog-action', '-action', '-set', '-tpmdev', '-monitor', '-debugcon',
  '-pflash', '-option-rom', '-runas', '-chroot', '-seed', '-compat', '-icount', '-echr', '-add-fd', '-iscsi',
  '-only-migratable', '-async-teardown', '-win2k-hack', '-no-fd-bootchk', '-rotate', '-portrait', '-acpitable',
  '-plugin', '-dfilter', '-singlestep', '-enable-sync-profile', '-mem-path', '-cdrom', '-fda', '-fdb', '-hda',
  '-hdb', '-hdc', '-hdd', '-mtdblock', '-sd', '-gdb', '-s', '-qmp-pretty', '-run-with', '-shim', '-jitdump', '-perfmap',
]);

/** `-machine` values qmigd reads; QEMU has many more, which change nothing here. */
interface MachineOpts {
  type?: string;
  memoryBackend?: string;
}

interface Backend {
  id: string;
  size: number;
  memPath?: string;
  /** share=on of a memory-backend-file: the RAM is the file, mapped shared. */
  share: boolean;
  prealloc: boolean;
}

/**
 * Parses argv (without the program name). `kvmUnavailable` says why KVM would not start on this
 * host (undefined: it would).
 */
export function parseQemuCommandLine(argv: string[], env: { kvmUnavailable: () => string | undefined } = { kvmUnavailable }): QemuCommandLine {
  const out: Omit<QemuCommandLine, 'machine' | 'migrationGlobals' | 'memoryBytes' | 'ramId' | 'cpus' | 'acpi' | 'accelerator' | 'messages'> = {
    action: 'run', paused: false, uuid: ZERO_UUID, memPrealloc: false, memoryShare: false, qmp: [], sandbox: NO_SANDBOX,
    daemonize: false, noShutdown: false, ignored: [],
  };
  let acpi = true;
  const accels: AccelRequest[] = [];
  const machineOpts: MachineOpts = {};
  let memory: number | undefined;
  let smp: Opts = new Map();
  const backends = new Map<string, Backend>();
  /** Each -chardev's options, and the option as written (what QEMU's errors about it quote). */
  const chardevs = new Map<string, { opts: Opts; where: string }>();
  const monitors: Opts[] = [];
  const globals: GlobalSetting[] = [];

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    // A bare argument is QEMU's first disk image: hardware qmigd does not emulate.
    if (!arg.startsWith('-')) {
      out.ignored.push(arg);
      continue;
    }
    // QEMU accepts --option as -option.
    const name = arg.startsWith('--') ? arg.slice(1) : arg;
    let value = '';
    const options = activeProfile().options;
    if (options.withArgument.has(name)) {
      if (i + 1 >= argv.length) throw new QemuCliError(`${arg}: requires an argument`);
      value = argv[++i]!;
    } else if (!options.withoutArgument.has(name)) {
      throw new QemuCliError(`${arg}: invalid option`);
    }
    const where = `${arg} ${value}`;
    try {
      switch (name) {
        case '-version': out.action = 'version'; break;
        case '-h': case '-help': out.action = 'help'; break;
        case '-S': out.paused = true; break;
        case '-daemonize': out.daemonize = true; break;
        case '-no-shutdown': out.noShutdown = true; break;
        case '-no-acpi': acpi = false; break;
        case '-mem-prealloc': out.memPrealloc = true; break;
        case '-pidfile': out.pidfile = value; break;
        case '-incoming': out.incoming = value; break;
        case '-sandbox': out.sandbox = parseSandbox(value); break;
        case '-uuid':
          if (!/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(value)) {
            throw new QemuCliError(`${where}: failed to parse UUID string: wrong format`);
          }
          out.uuid = value.toLowerCase();
          break;
        case '-name': {
          const o = parseOpts(value, 'guest');
          if (o.has('guest')) out.name = o.get('guest');
          break;
        }
        case '-m': {
          const o = parseOpts(value, 'size');
          if (o.has('size')) memory = sizeMiB('size', o.get('size')!);
          break;
        }
        case '-smp':
          smp = parseOpts(value, 'cpus');
          break;
        case '-machine': case '-M': {
          const o = parseOpts(value, 'type');
          if (o.has('type')) machineOpts.type = o.get('type');
          if (o.has('memory-backend')) machineOpts.memoryBackend = o.get('memory-backend');
          if (o.has('acpi')) acpi = o.get('acpi') !== 'off';
          for (const name of o.get('accel')?.split(':').filter(Boolean) ?? []) accels.push({ name });
          break;
        }
        case '-accel':
          accels.push({ name: parseOpts(value, 'accel').get('accel') ?? '', where });
          break;
        case '-enable-kvm':
          accels.push({ name: 'kvm' });
          break;
        case '-object': {
          const o = parseObject(value);
          const type = o.get('qom-type');
          if (type?.startsWith('memory-backend-')) {
            const id = o.get('id');
            if (!id) throw new QemuCliError(`${where}: Parameter 'id' is missing`);
            const memPath = o.get('mem-path');
            const share = type === 'memory-backend-file' && memPath !== undefined && optBool('share', o.get('share'), false);
            backends.set(id, { id, size: sizeBytes('size', o.get('size') ?? '0'), memPath, share, prealloc: optBool('prealloc', o.get('prealloc'), false) });
          } else out.ignored.push(where);
          break;
        }
        case '-qmp':
          out.qmp.push({ ...parseQmpSpec(value), exclusive: true, option: where } as QmpSpec);
          break;
        case '-chardev': {
          const o = parseOpts(value, 'backend');
          if (!o.get('id')) throw new QemuCliError(`${where}: Parameter 'id' is missing`);
          chardevs.set(o.get('id')!, { opts: o, where });
          break;
        }
        case '-mon':
          monitors.push(parseOpts(value, 'chardev'));
          break;
        case '-global': {
          // The migration object's are read (applied once the machine type is known); the
          // others set properties of hardware qmigd does not emulate.
          const setting = parseGlobal(value);
          if (setting?.driver === 'migration') globals.push(setting);
          else out.ignored.push(where);
          break;
        }
        default:
          if (!IGNORED.has(name)) throw new QemuCliError(`${arg}: invalid option`);
          out.ignored.push(where.trim());
      }
    } catch (err) {
      if (err instanceof QemuCliError) throw err;
      if (err instanceof OptsError || err instanceof SpecError || err instanceof Error) throw new QemuCliError(`${where}: ${err.message}`);
      throw err;
    }
  }

  const machine = machineOpts.type === undefined ? defaultMachine() : findMachine(machineOpts.type);
  if (machineOpts.type === 'help') {
    return { ...out, action: 'machine-help', machine: defaultMachine(), migrationGlobals: activeProfile().migrationGlobals.defaults, memoryBytes: DEFAULT_RAM, ramId: '', cpus: NO_CPUS, acpi, accelerator: 'tcg', messages: [] };
  }
  if (!machine) throw new QemuCliError(`${activeProfile().unsupportedMachine.replace('%s', machineOpts.type ?? '')}\nUse -machine help to list supported machines`);
  for (const mon of monitors) out.qmp.push(monitorSpec(mon, chardevs));
  let migrationGlobals: MigrationGlobals;
  try {
    migrationGlobals = applyGlobals(activeProfile(), machineGlobals(activeProfile(), machine), globals);
  } catch (err) {
    if (err instanceof GlobalError) throw new QemuCliError(err.message);
    throw err;
  }

  let memoryBytes = memory ?? DEFAULT_RAM;
  let ramId = machine.defaultRamId;
  if (machineOpts.memoryBackend !== undefined) {
    const backend = backends.get(machineOpts.memoryBackend);
    if (!backend) throw new QemuCliError(`Memory backend '${machineOpts.memoryBackend}' not found`);
    if (memory !== undefined && memory !== backend.size) {
      throw new QemuCliError(`Machine memory size does not match the size of the memory backend`);
    }
    memoryBytes = backend.size;
    ramId = backend.id;
    out.memoryFile = backend.memPath;
    out.memoryShare = backend.share;
    out.memPrealloc ||= backend.prealloc;
  }
  const cpus = smpTopology(smp, machine);
  const { accelerator, messages } = accelOf(accels, env.kvmUnavailable);
  // -M none makes no CPU, whatever -smp says; the PCs make the -smp count.
  return { ...out, machine, migrationGlobals, memoryBytes, ramId, cpus: machine.name === 'none' ? NO_CPUS : cpus, acpi: acpi && machine.acpi, accelerator, messages };
}

/** -smp's numbers (QEMU reports their errors without the option's text). */
function smpTopology(smp: Opts, machine: MachineType): CpuTopology {
  const given: Record<string, number> = {};
  const { levels, foreignLevels, foreignLevelError } = activeProfile().smp;
  for (const [key, value] of smp) {
    if (!['cpus', 'maxcpus', ...levels, ...foreignLevels].includes(key)) throw new QemuCliError(`Parameter 'smp.${key}' is unexpected`);
    if (!/^\d+$/.test(value)) throw new QemuCliError(`Parameter 'smp.${key}' expects integer`);
    given[key] = Number(value);
  }
  // Levels other targets have: taken, but a PC has only one of each.
  for (const level of foreignLevels) {
    if ((given[level] ?? 1) > 1) throw new QemuCliError(foreignLevelError.replace('%s', level));
  }
  try {
    return cpuTopology(given, machine, levels);
  } catch (err) {
    if (err instanceof SmpError) throw new QemuCliError(err.message);
    throw err;
  }
}

function accelOf(accels: AccelRequest[], kvm: () => string | undefined): { accelerator: Accelerator; messages: Message[] } {
  try {
    return chooseAccelerator(accels, kvm);
  } catch (err) {
    if (!(err instanceof AccelError)) throw err;
    const last = err.messages.at(-1)!;
    throw new QemuCliError('bare' in last ? last.bare : last.prefixed, err.messages.slice(0, -1));
  }
}

/**
 * -mon chardev=ID,mode=control over -chardev socket,id=ID,path=P|fd=N,server=on: a QMP monitor,
 * one client at a time as in QEMU. fd=N is a socket already bound and listening (libvirt binds
 * it, passes it and connects afterwards).
 */
function monitorSpec(mon: Opts, chardevs: Map<string, { opts: Opts; where: string }>): QmpSpec {
  const id = mon.get('chardev') ?? '';
  const chardev = chardevs.get(id);
  if (!chardev) throw new QemuCliError(`-mon ${[...mon].map(([k, v]) => `${k}=${v}`).join(',')}: chardev "${id}" not found`);
  const dev = chardev.opts;
  if ((mon.get('mode') ?? 'readline') !== 'control') throw new QemuCliError(`-mon chardev=${id}: only mode=control (QMP) monitors are emulated`);
  if (dev.get('backend') !== 'socket') throw new QemuCliError(`-chardev ${dev.get('backend')},id=${id}: only socket chardevs can carry a monitor`);
  const server = optBool('server', dev.get('server'), false);
  const wait = optBool('wait', dev.get('wait'), true);
  const fd = dev.get('fd');
  if (fd !== undefined) {
    if (!/^\d+$/.test(fd)) throw new QemuCliError(`-chardev socket,id=${id}: fd=${fd} is not a descriptor number`);
    return { kind: 'unix', path: '', fd: Number(fd), server: true, wait: false, exclusive: true, label: id, text: `chardev ${id}`, option: chardev.where };
  }
  const path = dev.get('path');
  const host = dev.get('host');
  const port = dev.get('port');
  const text = path !== undefined ? `unix:${path}` : `tcp:${host ?? ''}:${port ?? ''}`;
  return { ...parseQmpSpec(`${text},server=${server ? 'on' : 'off'},wait=${wait ? 'on' : 'off'}`), exclusive: true, label: id, option: chardev.where } as QmpSpec;
}

/** -machine help, as QEMU prints it (for the machines qmigd has). */
export function machineHelp(): string {
  const lines = machines().map((m) => {
    const aliasLine = m.alias ? [`${m.alias.padEnd(20)} ${m.description} (alias of ${m.name})`] : [];
    return [...aliasLine, `${m.name.padEnd(20)} ${m.description}${m.isDefault ? ' (default)' : ''}${m.deprecated ? ' (deprecated)' : ''}`];
  });
  return `Supported machines are:\n${lines.flat().join('\n')}\n`;
}
