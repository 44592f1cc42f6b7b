/**
 * Private libvirt 9.0 daemons for tests in which libvirt drives an emulator: qmigd through
 * bin/qmigd-qemu, and the real QEMU 7.2 beside it (the same tests, so that what they expect is
 * what libvirt does with QEMU).
 *
 * Each daemon runs on a "test host" of its own, made of fresh namespaces and nothing else:
 *
 *   node ──stdin pipe──▶ unshare --pid --fork --kill-child --mount-proc --net --mount --uts
 *                            └─ perl (pid 1 of the new pid namespace: reaps orphans, exits at EOF)
 *                                 ├─ libvirtd -d [--listen]       (entered with nsenter)
 *                                 ├─ the emulators libvirt starts (qemu: daemonized, so pid 1's)
 *                                 └─ virsh                        (entered with nsenter, per call)
 *
 * - Mount namespace: the host's own directories (DIR/etc, run, lib, log, cache) are bind-mounted
 *   over /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt. Where
 *   one of those does not exist on the machine, its nearest existing parent gets an overlay whose
 *   upper layer is in DIR, so the mount point is made there and not on the machine's disk. The
 *   user and groups libvirt 9.0 insists on (`libvirt-qemu`, `kvm`, `libvirt`), when the machine
 *   lacks them, go into copies of /etc/passwd and /etc/group bind-mounted the same way, and an
 *   empty /etc/resolv.conf makes name lookups fail at once. Nothing of the machine's is written.
 * - UTS namespace: a hostname of its own; with its own host_uuid, libvirt accepts the two daemons
 *   of a pair as different hosts for migration.
 * - Network namespace: only loopback, plus for a pair (`connectHosts`) a veth pair created
 *   directly inside the two namespaces (it never exists in the machine's namespace), with
 *   addresses computed at run time (see `uniqueLocalAddress`).
 * - PID namespace: when pid 1 (the perl reaper) ends, the kernel kills every process in the
 *   namespace, and with them the mount and network namespaces and the veth pair go away. pid 1
 *   ends when its stdin reaches EOF, which happens when this node process ends in any way (even
 *   SIGKILL: the pipe's write end closes), so a crashed test run leaves no daemon, emulator,
 *   mount or interface behind; only its directory in the temp dir, which the next run removes.
 *   No `ip netns add` is used: a named netns is a mount under /run/netns that would outlive a
 *   killed test.
 *
 * Every virsh call is bounded in time (a timeout kills its whole process group and fails the
 * call). `TestHost.stop()` destroys the domains, ends the namespaces and removes DIR; the test
 * files call it in their last subtest (asserting that nothing is left) and in t.teardown.
 *
 * Environment: QMIGD_LIBVIRT_EMULATOR (one `<emulator>` only, see EMULATORS); QMIGD_LIBVIRT_KEEP_LOGS=DIR
 * keeps each host's libvirtd.log (every QMP line) and the domains' emulator logs in DIR/HOSTNAME.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import {
  accessSync, closeSync, constants, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync,
  statSync, writeFileSync, type Stats,
} from 'node:fs';
import { hostname as machineHostname, tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';

export const REPO = resolve(import.meta.dirname, '..', '..', '..');

export const QMIGD_QEMU = join(REPO, 'bin', 'qmigd-qemu');
export const QMIGD_QEMU_7_2 = join(REPO, 'bin', 'qmigd-qemu-7.2');
/** qmigd-qemu as QEMU 10.0 (its name chooses the release). */
export const REAL_QEMU = '/usr/bin/qemu-system-x86_64';

/**
 * The `<emulator>`s under test: QMIGD_LIBVIRT_EMULATOR alone (absolute, or relative to the
 * repository) when set, else qmigd-qemu-7.2, the real QEMU 7.2 (skipped where not installed)
 * and qmigd-qemu (the default release, 10.0). (The real QEMU 10.0 lives in a chroot that
 * libvirt's paths do not reach.)
 */
export const EMULATORS = process.env.QMIGD_LIBVIRT_EMULATOR ? [resolve(REPO, process.env.QMIGD_LIBVIRT_EMULATOR)] : [QMIGD_QEMU_7_2, REAL_QEMU, QMIGD_QEMU];

/**
 * Whether the emulator still has -no-acpi (QEMU 10.0 does not). libvirt 9.0 passes it for a
 * domain without `<features><acpi/>`, so where it is gone the test domains have ACPI.
 */
export function hasNoAcpiOption(emulator: string): boolean {
  return spawnSync(emulator, ['-no-acpi', '-version'], { stdio: 'ignore', timeout: 10000 }).status === 0;
}

/** True when `emulator` is a real QEMU. */
export const isQemu = (emulator: string): boolean => basename(emulator).startsWith('qemu-system-');

export const MiB = 1 << 20;

/** Guest RAM of the test domains, and what `ramDigest` dumps with pmemsave. */
export const GUEST_MIB = 64;

const TMP_PREFIX = 'qmigd-libvirt-';

// ---------------------------------------------------------------------------------------------
// Running commands, bounded in time
// ---------------------------------------------------------------------------------------------

/** PATH with /usr/sbin and /sbin: libvirtd, ip and tc live there, and a user's PATH may lack them. */
const SBIN_PATH = `${process.env.PATH ?? '/usr/bin:/bin'}:/usr/sbin:/sbin`;

export interface RunResult {
  argv: string[];
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
}

export interface RunOptions {
  /** Milliseconds before the command's whole process group is killed (the call then fails). */
  timeout?: number;
  env?: NodeJS.ProcessEnv;
}

/** One line saying how a command ended, for error messages. */
export function describe(r: RunResult): string {
  const how = r.timedOut ? `timed out after ${r.ms} ms` : r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
  const out = (r.stderr.trim() || r.stdout.trim()).split('\n').slice(-6).join(' | ');
  return `${r.argv.join(' ')}: ${how}${out ? `: ${out}` : ''}`;
}

/**
 * Runs argv in a process group of its own; on timeout the whole group (nsenter and what it runs)
 * gets SIGKILL and the result says `timedOut`.
 */
export function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeout = opts.timeout ?? 30000;
  const started = Date.now();
  return new Promise((resolvePromise) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: { ...process.env, PATH: SBIN_PATH, LC_ALL: 'C', ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, timeout);
    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(timer);
      resolvePromise({ argv, code, signal, stdout, stderr, ms: Date.now() - started, timedOut });
    };
    child.on('error', (err) => {
      stderr += String(err);
      finish(127, null);
    });
    child.on('close', finish);
  });
}

function runSync(argv: string[], timeout = 10000): { status: number | null; out: string } {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout, env: { ...process.env, PATH: SBIN_PATH, LC_ALL: 'C' } });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` every `every` ms until it returns a value other than undefined, or throws after `ms`. */
export async function waitFor<T>(what: string, ms: number, probe: () => Promise<T | undefined> | T | undefined, every = 100): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await delay(every);
  }
}

// ---------------------------------------------------------------------------------------------
// Can the libvirt tests run here?
// ---------------------------------------------------------------------------------------------

function haveCommand(name: string): boolean {
  return runSync(['sh', '-c', `command -v ${name}`]).status === 0;
}

const skipCache = new Map<string, string | false>();

/**
 * Why the libvirt tests cannot run here, or false. `network`: a pair of hosts joined by a veth
 * pair, with tc to slow the link.
 */
export function libvirtSkip(emulator: string, opts: { network?: boolean } = {}): string | false {
  try {
    accessSync(emulator, constants.X_OK);
  } catch {
    return `emulator ${emulator} is not an executable file${isQemu(emulator) ? ' (.ci/run installs qemu-system-x86)' : ''}`;
  }
  const key = opts.network ? 'network' : 'plain';
  if (!skipCache.has(key)) skipCache.set(key, whySkip(opts.network === true));
  return skipCache.get(key)!;
}

function whySkip(network: boolean): string | false {
  if (process.platform !== 'linux') return 'libvirt tests need Linux namespaces';
  if (process.getuid?.() !== 0) return 'libvirt tests need root (they run private libvirtd daemons in namespaces)';
  const tools = ['libvirtd', 'virsh', 'unshare', 'nsenter', 'mount', 'perl', 'ip', ...(network ? ['tc'] : [])];
  const missing = tools.filter((c) => !haveCommand(c));
  if (missing.length > 0) {
    return `${missing.join(', ')} not installed (.ci/run installs libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients iproute2)`;
  }
  const ns = runSync(['unshare', '--pid', '--fork', '--mount-proc', '--net', '--mount', '--uts', '--propagation', 'private', '--', 'true']);
  if (ns.status !== 0) return `namespaces unavailable (unshare --pid --net --mount --uts: ${ns.out.trim()})`;
  if (network) {
    const veth = runSync([
      'unshare', '--net', '--', 'sh', '-c',
      'ip link add q0 type veth peer name q1 && ip link set q0 up && tc qdisc add dev q0 root tbf rate 1mbit burst 16kb latency 1s',
    ]);
    if (veth.status !== 0) return `veth pairs or tc tbf unavailable in a network namespace: ${veth.out.trim()}`;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Test hosts
// ---------------------------------------------------------------------------------------------

/** pid 1 of a test host: reaps every orphan (daemonized emulators) and exits at EOF on stdin. */
const REAPER = [
  'use POSIX qw(:sys_wait_h EINTR);',
  '$SIG{CHLD} = sub { 1 while waitpid(-1, WNOHANG) > 0 };',
  '$SIG{TERM} = $SIG{INT} = $SIG{HUP} = sub { exit 0 };',
  'for (;;) { my $n = sysread(STDIN, my $b, 4096); last if defined $n && $n == 0; last if !defined $n && $! != EINTR;',
  '  1 while waitpid(-1, WNOHANG) > 0 }',
].join('\n');

/** Runs inside the host's namespaces once: mounts, passwd/group, hostname, loopback. $1 = DIR, $2 = hostname. */
const SETUP = [
  'set -eu',
  'H=$1',
  'mount -t sysfs sysfs /sys',
  'for pair in etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt log:/var/log/libvirt cache:/var/cache/libvirt; do',
  '  src=$H/${pair%%:*}; dst=${pair#*:}',
  '  if [ ! -d "$dst" ]; then',
  // Make the mount point in an overlay whose upper layer is in $H, never on the machine's disk.
  '    parent=$(dirname "$dst"); while [ ! -d "$parent" ]; do parent=$(dirname "$parent"); done',
  '    key=$(printf %s "$parent" | tr / _)',
  '    if ! grep -q " $parent overlay " /proc/mounts; then',
  '      mkdir -p "$H/ov/$key/upper" "$H/ov/$key/work"',
  '      mount -t overlay overlay -o "lowerdir=$parent,upperdir=$H/ov/$key/upper,workdir=$H/ov/$key/work" "$parent"',
  '    fi',
  '    mkdir -p "$dst"',
  '  fi',
  '  mount --bind "$src" "$dst"',
  'done',
  'for f in passwd group; do if [ -f "$H/$f" ]; then mount --bind "$H/$f" /etc/$f; fi; done',
  'mount --bind "$H/resolv.conf" /etc/resolv.conf',
  'hostname "$2"',
  'ip link set lo up',
].join('\n');

export interface HostOptions {
  /** Short name, used in the hostname and the temp directory. */
  name: string;
  /** listen_tcp = 1, auth_tcp = "none", `libvirtd --listen`: a migration peer. */
  listen?: boolean;
}

export interface QmpRecord {
  /** libvirtd's timestamp. */
  time: string;
  /** libvirt's monitor object (one per emulator process, or per capability probe). */
  mon: string;
  kind: 'open' | 'close' | 'send' | 'reply' | 'event';
  /** The JSON as logged (for `send`, without the CRLF); `raw` when it does not parse. */
  raw: string;
  json?: { execute?: string; arguments?: unknown; return?: unknown; error?: { class: string; desc: string }; event?: string; data?: unknown };
  /** For `send`: the descriptor passed with the command (SCM_RIGHTS), -1 for none. */
  fd?: number;
}

const liveHosts = new Set<TestHost>();
let hostCounter = 0;

export class TestHost {
  readonly name: string;
  readonly hostname: string;
  readonly dir: string;
  readonly uuid: string;
  readonly listen: boolean;
  /** Address on the veth pair, once `connectHosts` has made it. */
  address?: string;
  private initPidValue = 0;
  private netnsValue = '';
  private pidnsValue = '';
  private unshare?: ReturnType<typeof spawn>;
  private unshareExited?: Promise<void>;
  /**
   * When pid 1 ended, in clock ticks since boot. The kernel reuses a freed namespace's number, so
   * a host another test makes a moment later may show the same `net:[N]`; its processes started
   * after ours ended, and are not ours.
   */
  private endedAtTicks = Infinity;
  private stopped = false;

  private constructor(o: HostOptions) {
    this.name = o.name;
    this.listen = o.listen === true;
    this.uuid = randomUUID();
    // Unique across the test files tap runs side by side: the pid, a counter, random bits.
    this.hostname = `qmigd-${o.name}-${process.pid}-${++hostCounter}-${randomBytes(2).toString('hex')}`;
    this.dir = mkdtempSync(join(tmpdir(), `${TMP_PREFIX}${o.name}-`));
  }

  /** pid (in the machine's pid namespace) of the host's pid 1. */
  get initPid(): number {
    return this.initPidValue;
  }

  /** `net:[INODE]` of the host's network namespace. */
  get netns(): string {
    return this.netnsValue;
  }

  /** The libvirt URI of this host from another host: qemu+tcp://[ADDRESS]/system. */
  get tcpUri(): string {
    if (!this.address) throw new Error(`${this.name} has no address: connectHosts() first`);
    return `qemu+tcp://[${this.address}]/system`;
  }

  /** The migration URI to this host: tcp://[ADDRESS]. */
  get migrateUri(): string {
    if (!this.address) throw new Error(`${this.name} has no address: connectHosts() first`);
    return `tcp://[${this.address}]`;
  }

  /** libvirtd's log on the machine's side of the bind mount. */
  get logFile(): string {
    return join(this.dir, 'log', 'libvirtd.log');
  }

  /** The emulator's stdout/stderr for a domain (stdio_handler = "file"). */
  domainLog(domain: string): string {
    const f = join(this.dir, 'log', 'qemu', `${domain}.log`);
    return existsSync(f) ? readFileSync(f, 'utf8') : '';
  }

  /** A directory for the test's files (saved images, RAM dumps), seen at the same path inside. */
  get workDir(): string {
    return join(this.dir, 'work');
  }

  static async start(o: HostOptions): Promise<TestHost> {
    const h = new TestHost(o);
    liveHosts.add(h);
    try {
      await h.boot();
    } catch (err) {
      const log = [h.readFile('init.log').trim(), ...h.logErrors(0, 5)].filter(Boolean).join('\n');
      await h.stop();
      throw new Error(`${(err as Error).message}\n${log}`);
    }
    return h;
  }

  private readFile(rel: string): string {
    try {
      return readFileSync(join(this.dir, rel), 'utf8');
    } catch {
      return '';
    }
  }

  private async boot(): Promise<void> {
    const d = this.dir;
    writeFileSync(join(d, 'owner'), `${process.pid}\n`);
    for (const sub of ['etc', 'run', 'lib', 'log', 'cache', 'ov', 'work']) mkdirSync(join(d, sub), { recursive: true });
    writeFileSync(join(d, 'etc', 'qemu.conf'), [
      'user = "root"',
      'group = "root"',
      'dynamic_ownership = 0',
      'remember_owner = 0',
      'security_driver = "none"',
      'namespaces = []',
      'cgroup_controllers = []',
      'stdio_handler = "file"',
      '',
    ].join('\n'));
    writeFileSync(join(d, 'etc', 'libvirtd.conf'), [
      'auth_unix_rw = "none"',
      `host_uuid = "${this.uuid}"`,
      'log_filters = "1:qemu.qemu_monitor 1:qemu.qemu_monitor_json 1:qemu.qemu_process 3:*"',
      'log_outputs = "1:file:/var/log/libvirt/libvirtd.log"',
      ...(this.listen ? ['listen_tcp = 1', 'listen_tls = 0', 'auth_tcp = "none"'] : []),
      '',
    ].join('\n'));
    writePasswdGroup(d);
    writeFileSync(join(d, 'resolv.conf'), '');

    const log = openSync(join(d, 'init.log'), 'a');
    const child = spawn('unshare', [
      '--pid', '--fork', '--kill-child', '--mount-proc', '--net', '--mount', '--uts', '--propagation', 'private',
      '--', 'perl', '-e', REAPER,
    ], { stdio: ['pipe', log, log] });
    closeSync(log);
    this.unshare = child;
    this.unshareExited = new Promise((r) =>
      child.on('exit', () => {
        this.endedAtTicks = bootTicks();
        r();
      }),
    );
    // This process's exit closes the pipe, and so ends the host, even if stop() is never called.
    child.unref();
    (child.stdin as unknown as { unref(): void }).unref();
    child.stdin!.on('error', () => undefined);

    this.initPidValue = await waitFor('the host\'s pid 1', 5000, () => {
      if (child.exitCode !== null) throw new Error(`unshare exited with ${child.exitCode}`);
      return reaperOf(child.pid!);
    }, 10);
    this.netnsValue = readlinkSync(`/proc/${this.initPid}/ns/net`);
    this.pidnsValue = readlinkSync(`/proc/${this.initPid}/ns/pid`);

    const setup = await this.exec(['sh', '-c', SETUP, 'setup', d, this.hostname], { timeout: 15000 });
    if (setup.code !== 0) throw new Error(`host setup failed: ${describe(setup)}`);
    const daemon = await this.exec(['libvirtd', '-d', ...(this.listen ? ['--listen'] : [])], { timeout: 30000 });
    if (daemon.code !== 0) throw new Error(`libvirtd did not start: ${describe(daemon)}`);
    await waitFor('libvirtd to answer', 15000, async () => ((await this.virsh(['uri'], { timeout: 5000 })).code === 0 ? true : undefined), 50);
  }

  /** Runs argv inside the host's mount, UTS, network and pid namespaces (nsenter), bounded in time. */
  exec(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
    if (!this.initPid) throw new Error(`${this.name} is not running`);
    const env = {
      // The client side of virsh must not write into the machine's home either.
      HOME: this.workDir,
      XDG_CONFIG_HOME: join(this.workDir, '.config'),
      XDG_CACHE_HOME: join(this.workDir, '.cache'),
      XDG_RUNTIME_DIR: join(this.workDir, '.run'),
      ...opts.env,
    };
    return run(['nsenter', '-t', String(this.initPid), '-m', '-u', '-n', '-p', '--', ...argv], { ...opts, env });
  }

  /** `virsh -c URI ARGS` inside the host (URI: this host's own libvirtd unless given). */
  virsh(args: string[], opts: RunOptions & { uri?: string } = {}): Promise<RunResult> {
    return this.exec(['virsh', '-c', opts.uri ?? 'qemu:///system', ...args], opts);
  }

  /**
   * As `virsh`, but fails (throws) unless virsh exits 0; returns stdout. The error carries the
   * errors libvirtd logged meanwhile: virsh often says only "An error occurred, but the cause is
   * unknown" (e.g. when the emulator's capability probe fails).
   */
  async virshOk(args: string[], opts: RunOptions & { uri?: string } = {}): Promise<string> {
    const mark = this.logMark();
    const r = await this.virsh(args, opts);
    if (r.code !== 0) {
      const errors = this.logErrors(mark);
      throw new Error(`${describe(r)}${errors.length ? `\nlibvirtd on ${this.name}:\n  ${errors.join('\n  ')}` : ''}`);
    }
    return r.stdout;
  }

  /**
   * The `error` lines libvirtd logged from byte offset `since` (the last `max`), without those
   * every start of a daemon in a container logs (dnsmasq, D-Bus, DMI, TLS certificates, cgroups).
   */
  logErrors(since = 0, max = 8): string[] {
    let text: string;
    try {
      text = readFileSync(this.logFile).subarray(since).toString('utf8');
    } catch {
      return [];
    }
    const harmless = /dnsmasqCapsNewFromBinary|virGDBus|udevGetDMIData|dmidecode|virNetTLSContext|virCgroup|networkStateInitialize/;
    return text
      .split('\n')
      .filter((l) => / error : /.test(l) && !harmless.test(l))
      .map((l) => l.replace(/^\S+ \S+: \d+: error : /, '').slice(0, 400))
      .slice(-max);
  }

  /** `virsh domstate --reason`: { state: 'running', reason: 'booted' }. */
  async domstate(domain: string): Promise<{ state: string; reason: string }> {
    const out = (await this.virshOk(['domstate', domain, '--reason'], { timeout: 10000 })).trim();
    const m = /^(.*?)(?: \((.*)\))?$/.exec(out)!;
    return { state: m[1]!, reason: m[2] ?? '' };
  }

  /** Polls domstate until it is `state` (and `reason`, if given). */
  waitState(domain: string, state: string, ms = 15000, reason?: string): Promise<{ state: string; reason: string }> {
    return waitFor(`${domain} on ${this.name} to be ${state}${reason ? ` (${reason})` : ''}`, ms, async () => {
      const s = await this.domstate(domain);
      return s.state === state && (reason === undefined || s.reason === reason) ? s : undefined;
    });
  }

  /** Names of the domains libvirt lists (`all`: also inactive ones). */
  async domains(all = true): Promise<string[]> {
    const out = await this.virshOk(['list', '--name', ...(all ? ['--all'] : [])], { timeout: 10000 });
    return out.split('\n').map((s) => s.trim()).filter(Boolean);
  }

  /** `virsh domjobinfo [--completed]` as key → value. */
  async domjobinfo(domain: string, completed = false): Promise<Record<string, string>> {
    const out = await this.virshOk(['domjobinfo', domain, ...(completed ? ['--completed'] : [])], { timeout: 10000 });
    return parseKeyValues(out);
  }

  /** Writes the domain's XML (see `domainXml`) and defines it. */
  async define(domain: string, emulator: string, extra: Partial<DomainOptions> = {}): Promise<void> {
    const file = join(this.workDir, `${domain}.xml`);
    writeFileSync(file, domainXml({ name: domain, emulator, acpi: !hasNoAcpiOption(emulator), ...extra }));
    await this.virshOk(['define', file], { timeout: 60000 });
  }

  /** The host's emulator pid for a running domain, inside the host (libvirt's pid file). */
  emulatorNsPid(domain: string): number | undefined {
    const f = join(this.dir, 'run', 'qemu', `${domain}.pid`);
    if (!existsSync(f)) return undefined;
    const pid = Number(readFileSync(f, 'utf8').trim());
    return pid > 0 ? pid : undefined;
  }

  /** Sends `signal` to the domain's emulator process (e.g. to make it die mid-migration). */
  async killEmulator(domain: string, signal: 'KILL' | 'TERM' | 'STOP' | 'CONT' = 'KILL'): Promise<number> {
    const pid = this.emulatorNsPid(domain);
    if (!pid) throw new Error(`no pid file for ${domain} on ${this.name}`);
    const r = await this.exec(['kill', '-s', signal, String(pid)], { timeout: 5000 });
    if (r.code !== 0) throw new Error(describe(r));
    return pid;
  }

  /** Byte offset of the end of libvirtd's log: pass it to `qmp()` to see only what follows. */
  logMark(): number {
    try {
      return statSync(this.logFile).size;
    } catch {
      return 0;
    }
  }

  /** The QMP traffic libvirtd logged (commands, replies, events), from byte offset `since`. */
  qmp(since = 0): QmpRecord[] {
    let text: string;
    try {
      text = readFileSync(this.logFile).subarray(since).toString('utf8');
    } catch {
      return [];
    }
    return parseQmpLog(text);
  }

  /** Machine pids of every process still in this host's namespaces (pid or network). */
  processes(): number[] {
    if (!this.netnsValue) return [];
    return processesIn(this.netnsValue, this.pidnsValue, this.endedAtTicks);
  }

  /**
   * Ends the host: destroys its domains (bounded), ends pid 1 (the kernel kills the rest, and the
   * namespaces, mounts and veth end go with them), waits for that, removes DIR. Idempotent.
   * Returns what it could not clean up (empty when all went).
   */
  async stop(): Promise<string[]> {
    if (this.stopped) return [];
    this.stopped = true;
    const problems: string[] = [];
    if (this.initPid && this.unshare?.exitCode === null) {
      try {
        for (const dom of await this.domains(false)) await this.virsh(['destroy', dom], { timeout: 15000 });
      } catch {
        /* the daemon may be gone already; the namespace ends anyway */
      }
      try {
        process.kill(this.initPid, 'SIGTERM');
      } catch {
        /* gone */
      }
      let timer: NodeJS.Timeout | undefined;
      const ended = await Promise.race([
        this.unshareExited!.then(() => true),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 10000))),
      ]);
      clearTimeout(timer);
      if (!ended) {
        problems.push(`${this.name}: pid 1 did not end on SIGTERM; killed unshare`);
        this.unshare!.kill('SIGKILL');
        await this.unshareExited;
      }
    }
    if (this.netnsValue) {
      try {
        await waitFor(`${this.name}'s processes to end`, 5000, () => (this.processes().length === 0 ? true : undefined), 50);
      } catch {
        problems.push(`${this.name}: processes left in its namespaces: ${this.processes().join(' ')}`);
      }
    }
    const keep = process.env.QMIGD_LIBVIRT_KEEP_LOGS;
    if (keep) {
      // For debugging an emulator: libvirtd's log (all QMP) and each domain's stdio, per host.
      try {
        cpSync(join(this.dir, 'log'), join(resolve(keep), this.hostname), { recursive: true });
      } catch (err) {
        problems.push(`${this.name}: logs not kept: ${(err as Error).message}`);
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
    if (existsSync(this.dir)) problems.push(`${this.name}: ${this.dir} not removed`);
    liveHosts.delete(this);
    return problems;
  }
}

/** The child of `unsharePid` once it runs perl (the host's pid 1), by its parent pid in /proc. */
function reaperOf(unsharePid: number): number | undefined {
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      if (ppid === unsharePid && comm === 'perl') return Number(e);
    } catch {
      /* raced with an exit */
    }
  }
  return undefined;
}

/** Now, in clock ticks since boot (the unit of a process's start time in /proc/PID/stat). */
function bootTicks(): number {
  return Math.ceil(Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * CLOCK_TICKS);
}
const CLOCK_TICKS = 100; // USER_HZ, the same on every Linux architecture we run on

/** A process's start time, in clock ticks since boot (field 22 of /proc/PID/stat). */
function startTicks(pid: string): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
}

/**
 * Machine pids whose network or pid namespace is one of these (`net:[N]`, `pid:[N]`) and that
 * started before `endedAtTicks` (a later one is in a new namespace that got the same number).
 */
function processesIn(netns: string, pidns: string, endedAtTicks: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const inOurs = readlinkSync(`/proc/${e}/ns/net`) === netns || readlinkSync(`/proc/${e}/ns/pid`) === pidns;
      if (inOurs && startTicks(e) <= endedAtTicks) out.push(Number(e));
    } catch {
      /* raced with an exit, or a kernel thread */
    }
  }
  return out;
}

/**
 * libvirt 9.0 looks up its compiled-in user and groups even when it runs guests as root
 * (`Failed to parse user 'libvirt-qemu'`). Where the machine lacks them, copies of /etc/passwd
 * and /etc/group with the entries added are bind-mounted inside the host; the machine's files
 * stay as they are.
 */
function writePasswdGroup(dir: string): void {
  const passwd = readFileSync('/etc/passwd', 'utf8');
  const group = readFileSync('/etc/group', 'utf8');
  const has = (db: string, name: string): boolean => db.split('\n').some((l) => l.startsWith(`${name}:`));
  const used = (db: string): Set<number> => new Set(db.split('\n').map((l) => Number(l.split(':')[2])).filter((n) => Number.isInteger(n)));
  const usedGids = used(group);
  const usedUids = used(passwd);
  const free = (set: Set<number>, from: number): number => {
    let n = from;
    while (set.has(n)) n++;
    set.add(n);
    return n;
  };
  let newGroup = group.endsWith('\n') ? group : `${group}\n`;
  let newPasswd = passwd.endsWith('\n') ? passwd : `${passwd}\n`;
  const gid = (name: string): number => Number(newGroup.split('\n').find((l) => l.startsWith(`${name}:`))!.split(':')[2]);
  for (const g of ['kvm', 'libvirt-qemu', 'libvirt']) {
    if (!has(newGroup, g)) newGroup += `${g}:x:${free(usedGids, 64055)}:\n`;
  }
  if (!has(newPasswd, 'libvirt-qemu')) {
    newPasswd += `libvirt-qemu:x:${free(usedUids, 64055)}:${gid('kvm')}:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n`;
  }
  if (newGroup !== group) writeFileSync(join(dir, 'group'), newGroup);
  if (newPasswd !== passwd) writeFileSync(join(dir, 'passwd'), newPasswd);
}

// ---------------------------------------------------------------------------------------------
// Two hosts on one link
// ---------------------------------------------------------------------------------------------

/**
 * An IPv6 unique local address (RFC 4193; its first byte is 0xfd: the ULA prefix, L bit set), then
 * a 40-bit global ID drawn at random for this link (as RFC 4193 prescribes, so that two test
 * files running side by side, or two runs on one machine, do not share a prefix), a zero subnet
 * ID, and the interface ID `index`. The address is computed from bytes at run time, so no
 * address but loopback is ever written in the code; it exists only on a veth pair between two
 * namespaces the test made, so no packet for it can leave the machine (no route leads out).
 */
export function uniqueLocalAddress(globalId: Buffer, index: number): string {
  if (globalId.length !== 5) throw new Error('a global ID is 40 bits');
  const b = Buffer.alloc(16);
  b[0] = 0xfd;
  globalId.copy(b, 1);
  b.writeUInt16BE(index, 14);
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return groups.join(':');
}

export interface Link {
  a: TestHost;
  b: TestHost;
  /** Slows what `host` sends on the link to `kbit` kbit/s (tc tbf), to make a migration last. */
  limit(host: TestHost, kbit: number): Promise<void>;
  /** Lifts `limit`. */
  unlimit(host: TestHost): Promise<void>;
}

const IFNAME = 'lv0';

/**
 * Joins two hosts with a veth pair made directly inside their network namespaces (both ends are
 * called lv0; the machine's namespace never holds either), gives each end a unique local address
 * (`host.address`), and checks that a's virsh reaches b's libvirtd and back.
 */
export async function connectHosts(a: TestHost, b: TestHost): Promise<Link> {
  const mk = await run(['ip', 'link', 'add', 'name', IFNAME, 'netns', String(a.initPid), 'type', 'veth', 'peer', 'name', IFNAME, 'netns', String(b.initPid)], { timeout: 10000 });
  if (mk.code !== 0) throw new Error(`veth pair: ${describe(mk)}`);
  const globalId = randomBytes(5);
  const hosts: [TestHost, number][] = [[a, 1], [b, 2]];
  for (const [h, index] of hosts) {
    const address = uniqueLocalAddress(globalId, index);
    // nodad: usable at once, without duplicate address detection's delay (nothing else is on the link).
    const r = await h.exec(['sh', '-c', `ip -6 addr add ${address}/64 dev ${IFNAME} nodad && ip link set ${IFNAME} up`], { timeout: 10000 });
    if (r.code !== 0) throw new Error(`address on ${h.name}: ${describe(r)}`);
    h.address = address;
  }
  for (const [from, to] of [[a, b], [b, a]] as const) {
    if (!to.listen) continue;
    await waitFor(`${from.name} to reach ${to.name}'s libvirtd`, 15000, async () => {
      const r = await from.virsh(['hostname'], { uri: to.tcpUri, timeout: 5000 });
      return r.code === 0 && r.stdout.trim() === to.hostname ? true : undefined;
    }, 100);
  }
  const tc = async (h: TestHost, args: string[]): Promise<void> => {
    const r = await h.exec(['tc', 'qdisc', ...args], { timeout: 10000 });
    if (r.code !== 0) throw new Error(describe(r));
  };
  return {
    a,
    b,
    limit: (h, kbit) => tc(h, ['replace', 'dev', IFNAME, 'root', 'tbf', 'rate', `${kbit}kbit`, 'burst', '16kb', 'latency', '2s']),
    async unlimit(h) {
      const r = await h.exec(['tc', 'qdisc', 'del', 'dev', IFNAME, 'root'], { timeout: 10000 });
      if (r.code !== 0 && !/No such file|Cannot delete qdisc with handle of zero/.test(r.stderr)) throw new Error(describe(r));
    },
  };
}

/** The argv of `virsh migrate` from src to dst (run with `src.virsh`). */
export function migrateArgs(dst: TestHost, domain: string, opts: { p2p?: boolean; extra?: string[] } = {}): string[] {
  return ['migrate', '--live', ...(opts.p2p ? ['--p2p'] : []), domain, dst.tcpUri, '--migrateuri', dst.migrateUri, ...(opts.extra ?? [])];
}

// ---------------------------------------------------------------------------------------------
// Domains
// ---------------------------------------------------------------------------------------------

export interface DomainOptions {
  name: string;
  emulator: string;
  memoryMiB: number;
  /** `<features><acpi/>`: the guest answers the power button by powering off. */
  acpi: boolean;
}

const xmlEscape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');

/**
 * The smallest domain libvirt starts: TCG, 64 MiB, one vCPU, machine pc, no disk, no NIC, no
 * USB, no balloon, no video. Without `acpi`, no `<features><acpi/>`: libvirt passes -no-acpi.
 */
export function domainXml(o: Partial<DomainOptions> & { name: string; emulator: string }): string {
  const { emulator } = o;
  return `<domain type='qemu'>
  <name>${xmlEscape(o.name)}</name>
  <memory unit='MiB'>${o.memoryMiB ?? GUEST_MIB}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
${o.acpi ? '  <features>\n    <acpi/>\n  </features>\n' : ''}  <devices>
    <emulator>${xmlEscape(emulator)}</emulator>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    <video>
      <model type='none'/>
    </video>
  </devices>
</domain>
`;
}

let dumpCounter = 0;

/**
 * RAM-EQUALITY HOOK: a digest of the domain's guest RAM, to compare a domain's RAM before and
 * after a migration (pause the guest first: a running guest changes its RAM).
 *
 * qmigd answers `__org.qmigd_query-ram-digest` ({sha256, size} of its whole RAM block). QEMU
 * does not have that command (libvirt passes its CommandNotFound through), so there the first
 * GUEST_MIB MiB of guest-physical memory are dumped with `pmemsave` (which qmigd serves as well)
 * into the host's work directory and hashed. The method is part of the returned string, so
 * digests taken in different ways never compare equal by accident.
 */
export async function ramDigest(host: TestHost, domain: string): Promise<string> {
  const digest = await host.virshOk(['qemu-monitor-command', domain, JSON.stringify({ execute: '__org.qmigd_query-ram-digest' })], { timeout: 30000 });
  const reply = JSON.parse(digest) as { return?: { sha256: string; size: number }; error?: { class: string; desc: string } };
  if (reply.return) return `qmigd-ram-digest size=${reply.return.size} sha256=${reply.return.sha256}`;
  if (reply.error?.class !== 'CommandNotFound') throw new Error(`__org.qmigd_query-ram-digest: ${digest.trim()}`);
  const file = join(host.workDir, `ram-${domain}-${++dumpCounter}.bin`);
  const size = GUEST_MIB * MiB;
  try {
    const out = await host.virshOk(['qemu-monitor-command', domain, JSON.stringify({ execute: 'pmemsave', arguments: { val: 0, size, filename: file } })], { timeout: 30000 });
    const r = JSON.parse(out) as { return?: unknown; error?: { desc: string } };
    if (!r.return) throw new Error(`pmemsave: ${out.trim()}`);
    const data = readFileSync(file);
    if (data.length !== size) throw new Error(`pmemsave wrote ${data.length} bytes, not ${size}`);
    return `pmemsave size=${size} sha256=${createHash('sha256').update(data).digest('hex')}`;
  } finally {
    rmSync(file, { force: true });
  }
}

/** Parses `Key:   value` lines (domjobinfo, dominfo). */
export function parseKeyValues(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

/** domjobinfo sizes ("311.954 KiB") in bytes. */
export function parseSize(v: string | undefined): number {
  const m = /^([\d.]+)\s*(B|KiB|MiB|GiB)$/.exec((v ?? '').trim());
  if (!m) return NaN;
  return Number(m[1]) * { B: 1, KiB: 1024, MiB: MiB, GiB: 1024 * MiB }[m[2] as 'B']!;
}

// ---------------------------------------------------------------------------------------------
// libvirtd's log: the QMP traffic
// ---------------------------------------------------------------------------------------------

const LINE = /^(\S+ \S+): \d+: \w+ : \w+:\d+ : QEMU_MONITOR_(SEND_MSG|RECV_REPLY|RECV_EVENT|NEW|CLOSE): mon=(0x[0-9a-f]+|\(nil\))(?: (msg|reply|event|fd)=(.*))?$/;

/**
 * The QMP records in libvirtd's log (log_filters 1:qemu.qemu_monitor...): QEMU_MONITOR_SEND_MSG
 * (the JSON ends with CRLF, so the descriptor passed with it, ` fd=N`, is on the next line),
 * QEMU_MONITOR_RECV_REPLY, QEMU_MONITOR_RECV_EVENT, QEMU_MONITOR_NEW and QEMU_MONITOR_CLOSE.
 */
export function parseQmpLog(text: string): QmpRecord[] {
  const lines = text.split('\n');
  const out: QmpRecord[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = LINE.exec(lines[i]!.replace(/\r$/, ''));
    if (!m) continue;
    const [, time, what, mon, , rest = ''] = m;
    const kinds: Record<string, QmpRecord['kind']> = { SEND_MSG: 'send', RECV_REPLY: 'reply', RECV_EVENT: 'event', NEW: 'open', CLOSE: 'close' };
    const kind = kinds[what!]!;
    const rec: QmpRecord = { time: time!, mon: mon!, kind, raw: rest };
    if (kind === 'send') {
      const fd = /^ fd=(-?\d+)/.exec(lines[i + 1] ?? '');
      if (fd) {
        rec.fd = Number(fd[1]);
        i++;
      }
    }
    if (kind === 'send' || kind === 'reply' || kind === 'event') {
      try {
        rec.json = JSON.parse(rest) as QmpRecord['json'];
      } catch {
        /* kept raw */
      }
    }
    out.push(rec);
  }
  return out;
}

/** The `execute` names of the commands in `records`, in order. */
export function commandsSent(records: QmpRecord[]): string[] {
  return records.filter((r) => r.kind === 'send').map((r) => r.json?.execute ?? `?${r.raw.slice(0, 40)}`);
}

/** The `event` names in `records`, with MIGRATION's status: `MIGRATION:completed`. */
export function eventsSeen(records: QmpRecord[]): string[] {
  return records
    .filter((r) => r.kind === 'event')
    .map((r) => (r.json?.event === 'MIGRATION' ? `MIGRATION:${(r.json.data as { status: string }).status}` : r.json?.event ?? '?'));
}

// ---------------------------------------------------------------------------------------------
// What the machine looks like (to show that the tests leave it as they found it)
// ---------------------------------------------------------------------------------------------

const WATCHED = ['/etc/libvirt', '/run/libvirt', '/var/lib/libvirt', '/var/log/libvirt', '/var/cache/libvirt', '/etc/passwd', '/etc/group', '/etc/resolv.conf'];

function describePath(p: string, depth: number, out: string[]): void {
  let st: Stats;
  try {
    st = lstatSync(p);
  } catch {
    out.push(`${p} absent`);
    return;
  }
  if (st.isDirectory()) {
    out.push(`${p} dir mtime=${st.mtimeMs}`);
    if (depth > 0) for (const e of readdirSync(p).sort()) describePath(join(p, e), depth - 1, out);
  } else if (st.isFile() && st.size < 1 << 20) {
    out.push(`${p} file sha256=${createHash('sha256').update(readFileSync(p)).digest('hex')}`);
  } else {
    out.push(`${p} size=${st.size} mtime=${st.mtimeMs}`);
  }
}

/**
 * The machine's libvirt directories, passwd/group/resolv.conf, hostname, named network
 * namespaces and network interfaces, as one text: equal before and after the tests.
 */
export function machineState(): string {
  const out: string[] = [];
  for (const p of WATCHED) describePath(p, 2, out);
  out.push(`hostname ${machineHostname()}`);
  out.push(`ip netns list: ${runSync(['ip', 'netns', 'list']).out.trim()}`);
  out.push(`links: ${runSync(['ip', '-o', 'link', 'show']).out.split('\n').map((l) => l.split(':')[1]?.trim()).filter(Boolean).sort().join(' ')}`);
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Leftovers of earlier runs, and of this one
// ---------------------------------------------------------------------------------------------

/** Directories of test hosts whose test process is gone (killed before it could remove them). */
function sweepStale(): void {
  let entries: string[];
  try {
    entries = readdirSync(tmpdir());
  } catch {
    return;
  }
  for (const e of entries) {
    if (!e.startsWith(TMP_PREFIX)) continue;
    const dir = join(tmpdir(), e);
    try {
      const owner = Number(readFileSync(join(dir, 'owner'), 'utf8').trim());
      if (!(owner > 0)) continue;
      try {
        process.kill(owner, 0);
        continue; // still running (another test file, side by side)
      } catch {
        /* gone */
      }
      rmSync(dir, { recursive: true, force: true });
    } catch {
      /* no owner file yet: a host being made right now */
    }
  }
}
sweepStale();

/** A test process that ends without stop(): end every host's pid 1 now and remove its directory. */
process.on('exit', () => {
  for (const h of liveHosts) {
    try {
      if (h.initPid) process.kill(h.initPid, 'SIGKILL');
    } catch {
      /* gone */
    }
    rmSync(h.dir, { recursive: true, force: true });
  }
});
