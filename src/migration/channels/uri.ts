/**
 * Migration URIs as QEMU 7.2 reads them: tcp:HOST:PORT, unix:PATH, exec:COMMAND, fd:NAME.
 * Parsing is separate from connecting so that `migrate` can fail synchronously on a bad URI,
 * as qmp_migrate() does, before any channel is opened.
 */
import type { OwnedFd } from './owned-fd.js';

export type MigrationUri =
  | { kind: 'tcp'; host: string; port: number; text: string }
  | { kind: 'unix'; path: string; text: string }
  | { kind: 'exec'; command: string; text: string }
  /** `fd`: the descriptor NAME stands for, once the caller has resolved it (a monitor's name, or a number). */
  | { kind: 'fd'; name: string; text: string; fd?: OwnedFd };

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
    default:
      return undefined;
  }
}
