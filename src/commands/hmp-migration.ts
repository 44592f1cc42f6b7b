/**
 * HMP's migration commands as the running release prints them (monitor/hmp-cmds.c: hmp_info_migrate,
 * hmp_info_migrate_capabilities, hmp_info_migrate_parameters, hmp_migrate, hmp_migrate_cancel).
 * Every line is made from what the QMP twin returns (query-migrate, query-migrate-capabilities,
 * query-migrate-parameters), as QEMU makes it, so HMP and QMP cannot disagree.
 */
import type { Daemon } from '../daemon/context.js';
import { activeProfile } from '../profiles/index.js';
import type { HmpArgs, HmpCommand } from './hmp.js';
import type { MigrationGlobals } from '../migration/globals.js';

type Value = unknown;
type Info = Record<string, Value>;

/** PRIu64 of a count, whether the service keeps it as a number or a bigint. */
const u64 = (v: Value): string => (typeof v === 'bigint' ? v.toString() : String(Math.trunc(Number(v))));

/** `x >> 10`: bytes as QEMU's "kbytes". */
const kbytes = (v: Value): string => (typeof v === 'bigint' ? (v >> 10n).toString() : String(Math.floor(Number(v) / 1024)));

/** printf("%0.2f"): glibc rounds an exact tie to even, where toFixed rounds it away from zero. */
export function fixed2(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  // From 1e21 on, toFixed writes exponents; such a double is an integer anyway.
  if (Math.abs(x) >= 1e21) return `${BigInt(x)}.00`;
  const s = Object.is(x, -0) ? '-0.00' : x.toFixed(2);
  // x has an exact tie at the hundredths when 8x is an odd integer (x = k + 1/8, 3/8, 5/8, 7/8).
  const eighths = Math.abs(x) * 8;
  if (!Number.isInteger(eighths) || eighths % 2 === 0 || Number(s.at(-1)) % 2 === 0) return s;
  const hundredths = BigInt(s.replace(/[-.]/g, '')) - 1n;
  const digits = hundredths.toString().padStart(3, '0');
  return `${x < 0 ? '-' : ''}${digits.slice(0, -2)}.${digits.slice(-2)}`;
}

/** How one value is printed after "label: ". */
const UNITS = {
  plain: u64,
  ms: (v: Value) => `${u64(v)} ms`,
  pages: (v: Value) => `${u64(v)} pages`,
  bytes: (v: Value) => `${u64(v)} bytes`,
  kbytes: (v: Value) => `${kbytes(v)} kbytes`,
  'bytes/second': (v: Value) => `${u64(v)} bytes/second`,
  times: (v: Value) => `${u64(v)} times`,
  mbps: (v: Value) => `${fixed2(Number(v))} mbps`,
  rate: (v: Value) => fixed2(Number(v)),
  onOff: (v: Value) => (v ? 'on' : 'off'),
  text: (v: Value) => String(v),
  quoted: (v: Value) => `'${String(v)}'`,
  'MB/s': (v: Value) => `${u64(v)} MB/s`,
} as const;
type Unit = keyof typeof UNITS;

/** [label, member of the query-migrate object, unit, printed only when the value is not 0]. */
type LineSpec = readonly [label: string, member: string, unit: Unit, onlyNonZero?: 'nonzero'];

function lines(obj: Info, specs: readonly LineSpec[]): string {
  return specs
    .filter(([, member, , only]) => obj[member] !== undefined && !(only && Number(obj[member]) === 0))
    .map(([label, member, unit]) => `${label}: ${UNITS[unit](obj[member])}\n`)
    .join('');
}


/** After "Migration status" and "total time" (printed even when query-migrate has no total-time). */
const TIME_LINES: readonly LineSpec[] = [
  ['expected downtime', 'expected-downtime', 'ms'],
  ['downtime', 'downtime', 'ms'],
  ['setup', 'setup-time', 'ms'],
];

const RAM_LINES: readonly LineSpec[] = [
  ['transferred ram', 'transferred', 'kbytes'],
  ['throughput', 'mbps', 'mbps'],
  ['remaining ram', 'remaining', 'kbytes'],
  ['total ram', 'total', 'kbytes'],
  ['duplicate', 'duplicate', 'pages'],
  ['skipped', 'skipped', 'pages'],
  ['normal', 'normal', 'pages'],
  ['normal bytes', 'normal-bytes', 'kbytes'],
  ['dirty sync count', 'dirty-sync-count', 'plain'],
  ['page size', 'page-size', 'kbytes'],
  ['multifd bytes', 'multifd-bytes', 'kbytes'],
  ['pages-per-second', 'pages-per-second', 'plain'],
  ['dirty pages rate', 'dirty-pages-rate', 'pages', 'nonzero'],
  ['postcopy request count', 'postcopy-requests', 'plain', 'nonzero'],
  ['precopy ram', 'precopy-bytes', 'kbytes', 'nonzero'],
  ['downtime ram', 'downtime-bytes', 'kbytes', 'nonzero'],
  ['postcopy ram', 'postcopy-bytes', 'kbytes', 'nonzero'],
  ['Zero-copy-send fallbacks happened', 'dirty-sync-missed-zero-copy', 'times', 'nonzero'],
];

const XBZRLE_LINES: readonly LineSpec[] = [
  ['cache size', 'cache-size', 'bytes'],
  ['xbzrle transferred', 'bytes', 'kbytes'],
  ['xbzrle pages', 'pages', 'pages'],
  ['xbzrle cache miss', 'cache-miss', 'pages'],
  ['xbzrle cache miss rate', 'cache-miss-rate', 'rate'],
  ['xbzrle encoding rate', 'encoding-rate', 'rate'],
  ['xbzrle overflow', 'overflow', 'plain'],
];

const THROTTLE_LINES: readonly LineSpec[] = [['cpu throttle percentage', 'cpu-throttle-percentage', 'plain']];

/** socket_uri() */
const SOCKET_URIS: Record<string, (a: Info) => string> = {
  inet: (a) => `tcp:${String(a.host)}:${String(a.port)}`,
  unix: (a) => `unix:${String(a.path)}`,
  fd: (a) => `fd:${String(a.str)}`,
  vsock: (a) => `vsock:${String(a.cid)}:${String(a.port)}`,
};
const socketUri = (a: Info): string => SOCKET_URIS[a.type as string]?.(a) ?? 'unknown address type';

/**
 * hmp_info_migrate(): query-migrate in words, section by section. (qmigd's query-migrate never
 * has blocked-reasons, disk, compression or vfio, so neither has this.)
 */
export function formatInfoMigrate(info: Info, globals: MigrationGlobals): string {
  // migration_global_dump(): the migration object's properties.
  let out = activeProfile().hmp.migrateGlobals(globals);
  if (info.status !== undefined) {
    const failedWhy = info.status === 'failed' && info['error-desc'] !== undefined ? ` (${String(info['error-desc'])})` : '';
    out += `Migration status: ${String(info.status)}${failedWhy}\n`;
    out += `total time: ${u64(info['total-time'] ?? 0)} ms\n`;
    out += lines(info, TIME_LINES);
  }
  if (info.ram) out += lines(info.ram as Info, RAM_LINES);
  if (info['xbzrle-cache']) out += lines(info['xbzrle-cache'] as Info, XBZRLE_LINES);
  out += lines(info, THROTTLE_LINES);
  if (info['postcopy-blocktime'] !== undefined) out += `postcopy blocktime: ${String(info['postcopy-blocktime'])}\n`;
  // The string output visitor's list: one vCPU, one number.
  if (info['postcopy-vcpu-blocktime'] !== undefined) out += `postcopy vcpu blocktime: ${(info['postcopy-vcpu-blocktime'] as number[]).join(',')}\n`;
  const addresses = info['socket-address'] as Info[] | undefined;
  if (addresses) out += `socket address: [\n${addresses.map((a) => `\t${socketUri(a)}\n`).join('')}]\n`;
  return out;
}

interface BitmapAlias {
  'node-name'?: string;
  name?: string;
  alias: string;
  bitmaps?: BitmapAlias[];
}

/** The block-bitmap-mapping, once one was set (even an empty one): each node, then its bitmaps. */
function bitmapMapping(mapping: BitmapAlias[] | undefined): string {
  if (!mapping) return '';
  const nodes = mapping.map(
    (n) => `  '${String(n['node-name'])}' -> '${String(n.alias)}'\n${(n.bitmaps ?? []).map((b) => `    '${String(b.name)}' -> '${String(b.alias)}'\n`).join('')}`,
  );
  return `block-bitmap-mapping:\n${nodes.join('')}`;
}

/** hmp_info_migrate_parameters(): each named as in QMP, in the profile's order and units. */
export function formatMigrateParameters(params: Info): string {
  return activeProfile()
    .hmp.parameterLines.map(([name, unit]) =>
      unit === 'mapping' ? bitmapMapping(params[name] as BitmapAlias[] | undefined) : lines(params, [[name, name, unit as Unit]]),
    )
    .join('');
}

export function formatMigrateCapabilities(caps: Array<{ capability: string; state: boolean }>): string {
  return caps.map((c) => `${c.capability}: ${c.state ? 'on' : 'off'}\n`).join('');
}

/**
 * hmp_migrate(): the same qmp_migrate() as QMP. Without -d QEMU would suspend the monitor until
 * the migration ends; the throwaway monitor of human-monitor-command cannot be suspended, so QEMU
 * says so and leaves the migration running, and so does qmigd.
 */
function migrate(d: Daemon, a: HmpArgs): string {
  d.migration.migrate({ uri: a.uri as string }, { blk: a.blk === true, inc: a.inc === true, resume: a.resume === true });
  return a.detach ? '' : 'terminal does not allow synchronous migration, continuing detached\n';
}

export const MIGRATION_COMMANDS: HmpCommand[] = [
  // The release's args_type, params and help (9.1 dropped -b and -i), read when used: this table
  // is made at import, before start-up chooses the profile.
  {
    name: 'migrate',
    get argsType() {
      return activeProfile().hmp.migrate.argsType;
    },
    get params() {
      return activeProfile().hmp.migrate.params;
    },
    get help() {
      return activeProfile().hmp.migrate.help;
    },
    run: migrate,
  },
  {
    name: 'migrate_cancel', argsType: '', params: '', help: 'cancel the current VM migration',
    run: (d) => (d.migration.cancel(), ''),
  },
  {
    name: 'migrate_pause', argsType: '', params: '', help: 'Pause an ongoing migration (postcopy-only)',
    run: (d) => (d.migration.pause(), ''),
  },
  {
    name: 'migrate_start_postcopy', argsType: '', params: '',
    help: 'Followup to a migration command to switch the migration to postcopy mode. The postcopy-ram capability must be set on both source and destination before the original migration command .',
    run: (d) => (d.migration.startPostcopy(), ''),
  },
];

export const MIGRATION_INFO: HmpCommand[] = [
  {
    name: 'migrate', argsType: '', params: '', help: 'show migration status',
    run: (d) => formatInfoMigrate(d.migration.info(), d.config.migrationGlobals),
  },
  {
    name: 'migrate_capabilities', argsType: '', params: '', help: 'show current migration capabilities',
    run: (d) => formatMigrateCapabilities(d.migration.queryCapabilities()),
  },
  {
    name: 'migrate_parameters', argsType: '', params: '', help: 'show current migration parameters',
    run: (d) => formatMigrateParameters(d.migration.queryParameters()),
  },
];
