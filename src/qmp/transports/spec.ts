/**
 * `--qmp` specifications, spelled as QEMU's `-qmp` spells its chardevs:
 *   unix:PATH[,server=on|off][,wait=on|off]   tcp:HOST:PORT[,server=on|off][,wait=on|off]
 * plus `ws:HOST:PORT` for QMP over WebSocket (always a server). `server` and `nowait` alone are
 * QEMU's old boolean spellings. Without server=on QEMU connects out to a listening client.
 */
export type QmpSpec =
  | { kind: 'unix'; path: string; server: boolean; wait: boolean; text: string }
  | { kind: 'tcp'; host: string; port: number; server: boolean; wait: boolean; text: string }
  | { kind: 'ws'; host: string; port: number; server: true; wait: false; text: string };

export class SpecError extends Error {}

export function parseQmpSpec(text: string): QmpSpec {
  const [address = '', ...options] = text.split(',');
  let server = false;
  let wait = true;
  for (const opt of options) {
    const [key, value] = opt.split('=', 2) as [string, string | undefined];
    const flag = (): boolean => {
      if (value === undefined || value === 'on' || value === 'yes' || value === 'true') return true;
      if (value === 'off' || value === 'no' || value === 'false') return false;
      throw new SpecError(`Parameter '${key}' expects 'on' or 'off' in --qmp ${text}`);
    };
    if (key === 'server') server = flag();
    else if (key === 'wait') wait = flag();
    else if (key === 'nowait' && value === undefined) wait = false;
    else throw new SpecError(`Invalid parameter '${key}' in --qmp ${text}`);
  }
  const colon = address.indexOf(':');
  const scheme = colon < 0 ? '' : address.slice(0, colon);
  const rest = address.slice(colon + 1);
  if (scheme === 'unix') {
    if (!rest) throw new SpecError(`--qmp ${text}: unix: needs a socket path`);
    return { kind: 'unix', path: rest, server, wait: server && wait, text };
  }
  if (scheme === 'tcp' || scheme === 'ws') {
    const portSep = rest.lastIndexOf(':');
    const host = portSep < 0 ? '' : rest.slice(0, portSep).replace(/^\[(.*)\]$/, '$1');
    const portText = portSep < 0 ? '' : rest.slice(portSep + 1);
    const port = /^\d+$/.test(portText) ? Number(portText) : NaN;
    if (!(port >= 0 && port <= 65535)) throw new SpecError(`--qmp ${text}: expected ${scheme}:HOST:PORT with a port from 0 to 65535`);
    const h = host || '0.0.0.0';
    if (scheme === 'ws') {
      if (options.length) throw new SpecError(`--qmp ${text}: ws: takes no options (it is always a server)`);
      return { kind: 'ws', host: h, port, server: true, wait: false, text };
    }
    if (!server && !host) throw new SpecError(`--qmp ${text}: a client connection needs a host`);
    return { kind: 'tcp', host: h, port, server, wait: server && wait, text };
  }
  throw new SpecError(`--qmp ${text}: expected unix:PATH, tcp:HOST:PORT or ws:HOST:PORT`);
}
