/**
 * Migration URIs as QEMU reads them: tcp:HOST:PORT, unix:PATH, exec:COMMAND, fd:NAME, and from
 * 8.2 file:PATH[,offset=N] (the profile lists the schemes of its release). Parsing is separate
 * from connecting so that `migrate` can fail synchronously on a bad URI, as qmp_migrate() does,
 * before any channel is opened. A 10.0 `channels` address (MigrationAddress) becomes the same
 * MigrationUri its URI spelling gives, so nothing past here knows which form the client used.
 */
import { activeProfile } from '../../profiles/index.js';
import type { OwnedFd } from './owned-fd.js';

export type MigrationUri =
  | { kind: 'tcp'; host: string; port: number; text: string }
  | { kind: 'unix'; path: string; text: string }
  | { kind: 'exec'; command: string; text: string }
  /** `fd`: the descriptor NAME stands for, once the caller has resolved it (a monitor's name, or a number). */
  | { kind: 'fd'; name: string; text: string; fd?: OwnedFd }
  /** `file`: the stream at byte `offset` of PATH (8.2's file: migration). */
  | { kind: 'file'; path: string; offset: number; text: string; fd?: OwnedFd };

export class UriError extends Error {}

/**
 * Transports both releases have and qmigd does not (Node has no AF_VSOCK, and RDMA needs its
 * hardware): refused in qmigd's words whichever spelling names them, URI or channels.
 */
const UNIMPLEMENTED: Record<string, string> = {
  vsock: 'qmigd does not implement vsock migration channels',
  rdma: 'qmigd does not implement rdma migration',
};

/** Returns undefined for an unknown scheme; throws UriError for a known scheme with a bad address. */
export function parseMigrationUri(uri: string): MigrationUri | undefined {
  const colon = uri.indexOf(':');
  const scheme = colon < 0 ? '' : uri.slice(0, colon);
  const rest = uri.slice(colon + 1);
  if (UNIMPLEMENTED[scheme]) throw new UriError(UNIMPLEMENTED[scheme]);
  if (!activeProfile().migration.uriSchemes.includes(scheme)) return undefined;
  switch (scheme) {
    case 'tcp': {
      // inet_parse(): HOST:PORT, with [v6] brackets; the port is required.
      const m = /^(\[[^\]]*\]|[^:]*):([^:,]+)(,.*)?$/.exec(rest);
      const port = m ? Number(m[2]) : NaN;
      if (!m || !Number.isInteger(port) || port < 0 || port > 65535) throw new UriError(`error parsing address '${rest}'`);
      const host = m[1]!.replace(/^\[(.*)\]$/, '$1');
      // An empty host: every interface to listen on, as QEMU's tcp::PORT (and localhost to connect to).
      return { kind: 'tcp', host, port, text: uri };
    }
    case 'unix':
      if (rest === '') throw new UriError('invalid Unix socket address');
      return { kind: 'unix', path: rest, text: uri };
    case 'exec':
      return { kind: 'exec', command: rest, text: uri };
    case 'fd':
      return { kind: 'fd', name: rest, text: uri };
    case 'file': {
      // file_parse_offset(): the first ",offset=" ends the path; the rest is a size.
      const at = rest.indexOf(',offset=');
      if (at < 0) return { kind: 'file', path: rest, offset: 0, text: uri };
      const text = rest.slice(at + ',offset='.length);
      return { kind: 'file', path: rest.slice(0, at), offset: Number(parseSize(text)), text: uri };
    }
    default:
      return undefined;
  }
}

/** qemu_strtosz() for file: offsets, its failures as error_setg_errno() words them. */
function parseSize(text: string): bigint {
  const bad = (errno: string): never => {
    throw new UriError(`file URI has bad offset ${text}: ${errno}`);
  };
  if (/^\s*-/.test(text)) bad('Numerical result out of range');
  const m = /^\s*(?:0[xX]([0-9a-fA-F]+)|(\d+)(?:\.(\d+))?)([bBkKmMgGtTpPeE]?)$/.exec(text);
  if (!m) return bad('Invalid argument');
  const shift = { '': 0n, b: 0n, k: 10n, m: 20n, g: 30n, t: 40n, p: 50n, e: 60n }[m[4]!.toLowerCase()]!;
  let value: bigint;
  if (m[1] !== undefined) value = BigInt(`0x${m[1]}`) << shift;
  else {
    const frac = m[3] ?? '';
    const scale = 10n ** BigInt(frac.length);
    value = (BigInt(m[2]! + frac) << shift) / scale;
  }
  if (value >= 2n ** 64n) bad('Numerical result out of range');
  return value;
}

/** A `channels` element as QAPI's MigrationChannel visitor leaves it. */
export interface MigrationChannelArg {
  'channel-type': 'main' | 'cpr';
  addr: { transport: string; [member: string]: unknown };
}

/**
 * migration_channel_parse_input()'s list half: one entry per type, and a main one (`migrate`
 * takes a cpr entry beside it, which only cpr-transfer mode uses; migrate-incoming takes one
 * entry). Returns the main address as a MigrationUri.
 */
export function parseChannels(channels: MigrationChannelArg[], side: 'outgoing' | 'incoming'): MigrationUri {
  if (side === 'incoming' && channels.length > 1) throw new UriError("Channel list must have only one entry, for type 'main'");
  const seen = new Set<string>();
  for (const c of channels) {
    if (seen.has(c['channel-type'])) throw new UriError(`Channel list has more than one ${c['channel-type']} entry`);
    seen.add(c['channel-type']);
  }
  // QEMU 10.0 itself crashes on a list without a main entry; this is the message 10.1 gives.
  const main = channels.find((c) => c['channel-type'] === 'main');
  if (!main) throw new UriError('Channel list has no main entry');
  return fromAddress(main.addr);
}

/** MigrationAddress → the MigrationUri its URI spelling gives (migrate_uri_parse in reverse). */
function fromAddress(a: MigrationChannelArg['addr']): MigrationUri {
  const str = (k: string): string => String(a[k]);
  switch (a.transport) {
    case 'socket':
      switch (a.type) {
        case 'inet': {
          const port = Number(str('port'));
          if (!/^\d+$/.test(str('port')) || port > 65535) throw new UriError(`error parsing address '${str('host')}:${str('port')}'`);
          return { kind: 'tcp', host: str('host'), port, text: `tcp:${str('host')}:${str('port')}` };
        }
        case 'unix':
          return { kind: 'unix', path: str('path'), text: `unix:${str('path')}` };
        case 'fd':
          return { kind: 'fd', name: str('str'), text: `fd:${str('str')}` };
        default:
          throw new UriError(UNIMPLEMENTED[String(a.type)] ?? `qmigd does not implement ${String(a.type)} migration channels`);
      }
    case 'exec': {
      const args = a.args as string[];
      if (args.length === 0) throw new UriError('exec migration needs a command to run');
      // QEMU runs argv as given, and spells exec:CMD as ["/bin/sh", "-c", CMD]; qmigd runs a
      // shell command, so argv becomes the command that runs exactly it.
      const command = args.length === 3 && args[0] === '/bin/sh' && args[1] === '-c' ? args[2]! : args.map(shellQuote).join(' ');
      return { kind: 'exec', command, text: `exec:${command}` };
    }
    case 'file':
      return { kind: 'file', path: str('filename'), offset: Number(a.offset), text: `file:${str('filename')},offset=${String(a.offset)}` };
    default:
      throw new UriError(UNIMPLEMENTED[a.transport] ?? `qmigd does not implement ${a.transport} migration`);
  }
}

const shellQuote = (arg: string): string => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`);
