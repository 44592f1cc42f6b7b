/**
 * Migration URIs as QEMU 7.2 reads them: tcp:HOST:PORT, unix:PATH, exec:COMMAND, fd:NAME.
 * Parsing is separate from connecting so that `migrate` can fail synchronously on a bad URI,
 * as qmp_migrate() does, before any channel is opened.
 */
import { activeProfile } from '../../profiles/index.js';
import type { OwnedFd } from './owned-fd.js';

export type MigrationUri =
  | { kind: 'tcp'; host: string; port: number; text: string }
  | { kind: 'unix'; path: string; text: string }
  | { kind: 'exec'; command: string; text: string }
  /** `fd`: the descriptor NAME stands for, once the caller has resolved it (a monitor's name, or a number). */
  | { kind: 'fd'; name: string; text: string; fd?: OwnedFd }
  /** `file:PATH[,offset=N]` (8.2+): the stream in a file from byte N; `fd` once the caller opened it. */
  | { kind: 'file'; path: string; offset: number; text: string; fd?: OwnedFd };

export class UriError extends Error {}

/** Returns undefined for an unknown scheme; throws UriError for a known scheme with a bad address. */
export function parseMigrationUri(uri: string): MigrationUri | undefined {
  const colon = uri.indexOf(':');
  const scheme = colon < 0 ? '' : uri.slice(0, colon);
  const rest = uri.slice(colon + 1);
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
      if (!activeProfile().stream.fileUri) return undefined;
      // file_parse_offset(): the last ",offset=" starts a size (qemu_strtosz: K, M, G... suffixes).
      const at = rest.indexOf(',offset=');
      if (at < 0) return { kind: 'file', path: rest, offset: 0, text: uri };
      const spec = rest.slice(at + ',offset='.length);
      const offset = parseSize(spec);
      if (offset === undefined) throw new UriError(`file URI has bad offset ${spec}: Invalid argument`);
      return { kind: 'file', path: rest.slice(0, at), offset, text: uri };
    }
    default:
      return undefined;
  }
}

/** qemu_strtosz(): a number of bytes, or a decimal with a B/K/M/G/T/P/E suffix (powers of 1024). */
function parseSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)([bkmgtpe])?$/i.exec(text);
  if (!m) return undefined;
  const unit = 1024 ** 'bkmgtpe'.indexOf((m[2] ?? 'b').toLowerCase());
  if (m[1]!.includes('.') && !m[2]) return undefined;
  const n = Math.floor(Number(m[1]) * unit);
  return Number.isSafeInteger(n) ? n : undefined;
}
