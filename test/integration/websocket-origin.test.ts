/**
 * Cross-site WebSocket hijacking: a browser lets any page open a WebSocket to a loopback port,
 * so a ws: monitor serves only pages of its origin= values (and clients that send no Origin,
 * which browsers always send). Shown with a real headless chromium loading pages from two
 * origins (two HTTP servers on 127.0.0.1); plus the --qmp parsing and binding rules.
 */
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { networkInterfaces } from 'node:os';
import t from 'tap';
import WebSocket from 'ws';
import { parseQmpSpec } from '../../src/qmp/transports/spec.js';
import { chromiumInstalled, CHROMIUM, launchChromium, servePage } from '../helpers/browser.js';
import { BIN, freePort, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { QmpClient } from '../helpers/qmp-client.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The page: opens the monitor, sends the requests once it is open, reports what happened. */
const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>a web page</title>
<script>
window.openMonitor = (url, requests, timeoutMs) => new Promise((resolve) => {
  const messages = [];
  let opened = false;
  let settled = false;
  const ws = new WebSocket(url);
  const done = (outcome) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    ws.close();
    resolve({ opened, messages, outcome });
  };
  const timer = setTimeout(() => done('timeout'), timeoutMs);
  ws.onopen = () => {
    opened = true;
    for (const r of requests) ws.send(r);
  };
  ws.onmessage = (e) => {
    messages.push(e.data);
    if (messages.length === requests.length + 1) done('answered');
  };
  ws.onerror = () => done('error');
  ws.onclose = (e) => done('closed ' + e.code);
});
</script>
`;

interface PageResult {
  opened: boolean;
  messages: string[];
  outcome: string;
}

const GREETING = /^\{"QMP": \{"version": \{"qemu": \{"micro": 0, "minor": 2, "major": 7\}, "package": "qmigd [^"]+"\}, "capabilities": \["oob"\]\}\}$/;

/** The daemon's JSON log lines. */
function logLines(d: RunningDaemon): Array<Record<string, unknown>> {
  return d.stderr().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The log reaches the test a moment after the effects it reports: wait for a line. */
async function logged(d: RunningDaemon, match: (line: Record<string, unknown>) => boolean, timeoutMs = 2000): Promise<Record<string, unknown> | undefined> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const hit = logLines(d).find(match);
    if (hit || performance.now() > deadline) return hit;
    await sleep(20);
  }
}

/** A non-loopback IPv4 address of this machine, if it has one (to show what listens beyond loopback). */
function externalAddress(): string | undefined {
  return Object.values(networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
}

function connects(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    s.setTimeout(2000, () => {
      s.destroy();
      resolve('timeout');
    });
  });
}

t.test('a page of another origin cannot open the monitor; a page of an allowed origin can', { skip: !chromiumInstalled() && `${CHROMIUM} is not installed (.ci/run installs Debian's chromium)`, timeout: 60000 }, async (t) => {
  const started = performance.now();
  const [allowed, other] = await Promise.all([servePage(PAGE), servePage(PAGE)]);
  t.teardown(() => Promise.all([allowed.close(), other.close()]));
  const d = await startDaemon([], { qmp: [`ws:127.0.0.1:${await freePort()},origin=${allowed.origin}`] });
  t.teardown(() => d.stop());
  const monitor = d.listening[0]!;
  const url = `ws://${monitor.slice(3)}`;
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const console: string[] = [];

  // The other origin's page asks the guest to stop.
  const page = await browser.newPage();
  page.on('console', (m) => console.push(m.text()));
  await page.goto(other.url);
  const refused = await page.evaluate(
    ([u, reqs]) => (window as unknown as { openMonitor: (u: string, r: string[], ms: number) => Promise<PageResult> }).openMonitor(u, reqs, 3000),
    [url, ['{"execute":"qmp_capabilities"}', '{"execute":"stop"}']] as [string, string[]],
  );
  t.equal(refused.opened, false, 'the WebSocket never opened');
  t.same(refused.messages, [], 'no greeting, nothing at all');
  t.match(refused.outcome, /^(error|closed 1006)$/, `it failed (${refused.outcome})`);
  t.comment(`chromium said: ${console.join(' | ')}`);
  const warning = await logged(d, (l) => l.level === 40 && l.origin === other.origin);
  t.ok(warning, 'the daemon logged the refusal as a warning');
  t.equal(warning?.qmp, monitor, 'naming the monitor');
  t.match(String(warning?.msg), `origin ${other.origin} on ${monitor}`, 'in its message too');
  t.notOk(logLines(d).some((l) => l.msg === 'client connected'), 'no session was created for it');

  // Nothing ran: the guest still runs (a client without an Origin header is served as before).
  const node = await QmpClient.at(monitor);
  await node.negotiate();
  t.same(await node.cmd('query-status'), { return: { status: 'running', singlestep: false, running: true } }, 'the guest was not stopped');
  t.same(node.events, [], 'no STOP event');
  node.close();

  // The allowed origin's page opens it, is greeted, negotiates and is answered.
  const good = await browser.newPage();
  await good.goto(allowed.url);
  const served = await good.evaluate(
    ([u, reqs]) => (window as unknown as { openMonitor: (u: string, r: string[], ms: number) => Promise<PageResult> }).openMonitor(u, reqs, 3000),
    [url, ['{"execute":"qmp_capabilities"}', '{"execute":"query-status"}']] as [string, string[]],
  );
  t.equal(served.opened, true);
  t.equal(served.outcome, 'answered');
  t.match(served.messages[0], GREETING, 'greeted');
  t.same(served.messages.slice(1), ['{"return": {}}', '{"return": {"status": "running", "singlestep": false, "running": true}}'], 'negotiated and answered');
  t.comment(`browser test took ${(performance.now() - started).toFixed(0)} ms`);
});

t.test('handshakes by Origin: none is served, an exact allowed one is served, any other gets 403', async (t) => {
  const d = await startDaemon([], { qmp: [`ws:127.0.0.1:${await freePort()},origin=http://localhost:8080,origin=HTTPS://LocalHost:443/`] });
  t.teardown(() => d.stop());
  const url = `ws://${d.listening[0]!.slice(3)}`;
  const attempt = (origin?: string): Promise<string> =>
    new Promise((resolve) => {
      const ws = new WebSocket(url, origin === undefined ? {} : { headers: { Origin: origin } });
      ws.once('open', () => {
        ws.terminate();
        resolve('open');
      });
      ws.once('unexpected-response', (_req, res) => {
        resolve(`HTTP ${res.statusCode}`);
        ws.terminate();
      });
      ws.once('error', (err) => resolve(err.message));
    });
  t.equal(await attempt(), 'open', 'no Origin header (not a browser)');
  t.equal(await attempt('http://localhost:8080'), 'open', 'an allowed origin');
  t.equal(await attempt('https://localhost'), 'open', 'the second, as configured with its scheme and host in capitals, default port and slash');
  t.equal(await attempt('http://localhost:8081'), 'HTTP 403', 'another port');
  t.equal(await attempt('http://localhost:8080/'), 'HTTP 403', 'not as browsers spell it');
  t.equal(await attempt('https://localhost:8080'), 'HTTP 403', 'another scheme');
  t.equal(await attempt('null'), 'HTTP 403', 'an opaque origin (a file: page, a sandboxed frame)');
  t.equal(await attempt(''), 'HTTP 403', 'an empty Origin header');
  await logged(d, (l) => l.level === 40 && l.origin === '');
  t.same(
    logLines(d).filter((l) => l.level === 40).map((l) => l.origin),
    ['http://localhost:8081', 'http://localhost:8080/', 'https://localhost:8080', 'null', ''],
    'each refusal logged once, with its origin',
  );
});

t.test('--qmp ws: origin= values: repeated, normalised as browsers serialize origins, bad ones refused', async (t) => {
  const spec = parseQmpSpec('ws:127.0.0.1:4000,origin=http://127.0.0.1:8080,origin=http://localhost:8080');
  t.same(spec.kind === 'ws' && spec.origins, ['http://127.0.0.1:8080', 'http://localhost:8080']);
  const ws = (o: string): string[] => {
    const s = parseQmpSpec(`ws:127.0.0.1:4000,origin=${o}`);
    return s.kind === 'ws' ? s.origins : [];
  };
  t.same(ws('HTTP://LocalHost:80/'), ['http://localhost'], 'scheme and host lower-cased, default port and slash dropped');
  t.same(ws('https://[::1]:8443'), ['https://[::1]:8443']);
  t.same(parseQmpSpec('ws:127.0.0.1:4000').kind === 'ws' && (parseQmpSpec('ws:127.0.0.1:4000') as { origins: string[] }).origins, [], 'none allowed by default');
  for (const bad of ['', 'localhost:8080', 'ftp://localhost', 'http://localhost:8080/app', 'http://localhost:8080/?q', 'http://localhost#x', 'http://user@localhost', 'null', 'http://', 'http://local host']) {
    t.throws(() => parseQmpSpec(`ws:127.0.0.1:4000,origin=${bad}`), { message: `--qmp ws:127.0.0.1:4000,origin=${bad}: origin '${bad}' is not an http or https origin (scheme://host[:port], e.g. http://localhost:8080)` }, `refused: ${JSON.stringify(bad)}`);
  }
  t.throws(() => parseQmpSpec('unix:/tmp/q.sock,server=on,origin=http://localhost'), { message: '--qmp unix:/tmp/q.sock,server=on,origin=http://localhost: origin= applies to ws: monitors only' });
  t.throws(() => parseQmpSpec('ws:127.0.0.1:4000,server=on'), { message: '--qmp ws:127.0.0.1:4000,server=on: ws: takes only origin= and exclusive= (it is always a server)' });
  // As the daemon reports it: one line, exit 1, nothing started.
  const r = spawnSync(process.execPath, [BIN, '--qmp', 'ws:127.0.0.1:0,origin=ftp://localhost'], { encoding: 'utf8', timeout: 10000 });
  t.equal(r.status, 1);
  t.equal(r.stderr, "qmigd: --qmp ws:127.0.0.1:0,origin=ftp://localhost: origin 'ftp://localhost' is not an http or https origin (scheme://host[:port], e.g. http://localhost:8080)\n");
});

t.test('ws::PORT listens on 127.0.0.1 only; tcp::PORT,server=on on every interface, as QEMU', async (t) => {
  t.same(parseQmpSpec('ws::4000'), { kind: 'ws', host: '127.0.0.1', port: 4000, server: true, wait: false, exclusive: false, origins: [], text: 'ws::4000' });
  t.same(parseQmpSpec('tcp::4000,server=on'), { kind: 'tcp', host: '', port: 4000, server: true, wait: true, exclusive: false, text: 'tcp::4000,server=on' });
  const [wsPort, tcpPort] = [await freePort(), await freePort()];
  const d = await startDaemon([], { qmp: [`ws::${wsPort}`, `tcp::${tcpPort},server=on,wait=off`] });
  t.teardown(() => d.stop());
  t.equal(d.listening[0], `ws:127.0.0.1:${wsPort}`, 'the logged listening address of ws::PORT');
  t.not(d.listening[1], `tcp:127.0.0.1:${tcpPort}`, 'tcp::PORT is not loopback only');
  t.equal(await connects('127.0.0.1', wsPort), 'connected');
  t.equal(await connects('127.0.0.1', tcpPort), 'connected');
  const external = externalAddress();
  if (external === undefined) {
    t.comment('no non-loopback interface here: reachability beyond loopback not checked');
  } else {
    t.equal(await connects(external, wsPort), 'ECONNREFUSED', 'ws::PORT is not reachable on another interface');
    t.equal(await connects(external, tcpPort), 'connected', 'tcp::PORT is reachable on another interface');
  }
});
