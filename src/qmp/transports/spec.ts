/**
 * `--qmp` specifications, spelled as QEMU's `-qmp` spells its chardevs:
 *   unix:PATH[,server=on|off][,wait=on|off]   tcp:HOST:PORT[,server=on|off][,wait=on|off]
 * plus `ws:HOST:PORT[,origin=URL]...` for QMP over WebSocket (always a server). `server` and
 * `nowait` alone are QEMU's old boolean spellings. Without server=on QEMU connects out to a
 * listening client.
 *
 * Two options are qmigd's own. `exclusive=on` (any kind) serves one client at a time as QEMU
 * does, where qmigd's default lets several share a monitor (see exclusive.ts). `origin=URL`
 * (ws: only, repeatable) names a web origin whose pages may open the monitor: browsers let any
 * page open a WebSocket to any address, so a handshake that carries an Origin header must carry
 * one of these; clients that send none (not browsers) are not affected.
 *
 * `text` is the address as given; `option` the command-line option that made the monitor as it
 * was written (`-qmp unix:...`, `-chardev socket,...`), which a failure to listen quotes as QEMU does.
 */
export type QmpSpec =
  /** `fd`: a socket already bound and listening, inherited (QEMU's -chardev socket,fd=N). */
  | { kind: 'unix'; path: string; fd?: number; server: boolean; wait: boolean; exclusive: boolean; label?: string; text: string; option?: string }
  /** `host` is empty for a server on every interface, as QEMU's `tcp::PORT,server=on`. */
  | { kind: 'tcp'; host: string; port: number; server: boolean; wait: boolean; exclusive: boolean; label?: string; text: string; option?: string }
  | { kind: 'ws'; host: string; port: number; server: true; wait: false; exclusive: boolean; origins: string[]; text: string; option?: string };

export class SpecError extends Error {}

/**
 * A ws: monitor with no host in its address listens on loopback only. QEMU has no ws: monitor
 * whose meaning to keep (its tcp::PORT, kept for tcp:, is every interface), and a monitor without
 * authentication that any machine on the network can reach is a poor default.
 */
const WS_DEFAULT_HOST = '127.0.0.1';

export function parseQmpSpec(text: string): QmpSpec {
  const [address = '', ...options] = text.split(',');
  let server = false;
  let wait = true;
  let exclusive = false;
  let streamOptions = false;
  const origins: string[] = [];
  for (const opt of options) {
    const eq = opt.indexOf('=');
    const key = eq < 0 ? opt : opt.slice(0, eq);
    const value = eq < 0 ? undefined : opt.slice(eq + 1);
    const flag = (): boolean => {
      if (value === undefined || value === 'on' || value === 'yes' || value === 'true') return true;
      if (value === 'off' || value === 'no' || value === 'false') return false;
      throw new SpecError(`Parameter '${key}' expects 'on' or 'off' in --qmp ${text}`);
    };
    if (key === 'server') server = flag();
    else if (key === 'wait') wait = flag();
    else if (key === 'nowait' && value === undefined) wait = false;
    else if (key === 'exclusive') exclusive = flag();
    else if (key === 'origin') origins.push(parseOrigin(value, text));
    else throw new SpecError(`Invalid parameter '${key}' in --qmp ${text}`);
    if (key === 'server' || key === 'wait' || key === 'nowait') streamOptions = true;
  }
  const colon = address.indexOf(':');
  const scheme = colon < 0 ? '' : address.slice(0, colon);
  const rest = address.slice(colon + 1);
  if (scheme !== 'ws' && origins.length) throw new SpecError(`--qmp ${text}: origin= applies to ws: monitors only`);
  if (scheme === 'unix') {
    if (!rest) throw new SpecError(`--qmp ${text}: unix: needs a socket path`);
    return { kind: 'unix', path: rest, server, wait: server && wait, exclusive, text };
  }
  if (scheme === 'tcp' || scheme === 'ws') {
    const portSep = rest.lastIndexOf(':');
    const host = portSep < 0 ? '' : rest.slice(0, portSep).replace(/^\[(.*)\]$/, '$1');
    const portText = portSep < 0 ? '' : rest.slice(portSep + 1);
    const port = /^\d+$/.test(portText) ? Number(portText) : NaN;
    if (!(port >= 0 && port <= 65535)) throw new SpecError(`--qmp ${text}: expected ${scheme}:HOST:PORT with a port from 0 to 65535`);
    if (scheme === 'ws') {
      if (streamOptions) throw new SpecError(`--qmp ${text}: ws: takes only origin= and exclusive= (it is always a server)`);
      return { kind: 'ws', host: host || WS_DEFAULT_HOST, port, server: true, wait: false, exclusive, origins, text };
    }
    if (!server && !host) throw new SpecError(`--qmp ${text}: a client connection needs a host`);
    return { kind: 'tcp', host, port, server, wait: server && wait, exclusive, text };
  }
  throw new SpecError(`--qmp ${text}: expected unix:PATH, tcp:HOST:PORT or ws:HOST:PORT`);
}

/**
 * An origin as a browser's Origin header spells it: scheme://host[:port], scheme and host in
 * lower case, IDNs in punycode, the default port left out, no trailing slash. The WHATWG URL
 * parser that browsers use gives exactly that; anything beyond an origin (a path, a query,
 * credentials) is refused rather than silently dropped, since it would not mean what it says.
 */
function parseOrigin(value: string | undefined, text: string): string {
  const refuse = (): never => {
    throw new SpecError(`--qmp ${text}: origin '${value ?? ''}' is not an http or https origin (scheme://host[:port], e.g. http://localhost:8080)`);
  };
  let url: URL;
  try {
    url = new URL(value ?? '');
  } catch {
    return refuse();
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') refuse();
  // href is origin + "/" exactly when there is no path, query, fragment or user info.
  if (url.href !== `${url.origin}/`) refuse();
  return url.origin;
}
