/**
 * A real browser for tests of what web pages can do: Debian's chromium, headless, driven through
 * playwright-core (which downloads no browser of its own), and small pages served from
 * 127.0.0.1, each server on a port of its own and so an origin of its own.
 */
import { existsSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

export function chromiumInstalled(): boolean {
  return existsSync(CHROMIUM);
}

/** Headless chromium with a fresh profile (playwright makes one per launch), bounded in time. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    timeout: 20000,
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // Loopback is never proxied, but a proxy in the environment must not be consulted at all.
      '--no-proxy-server',
    ],
  });
}

export interface ServedPage {
  /** http://127.0.0.1:PORT, as the browser sends it in an Origin header. */
  origin: string;
  url: string;
  close(): Promise<void>;
}

/** Serves `html` at / on 127.0.0.1 (anything else: 404). */
export async function servePage(html: string): Promise<ServedPage> {
  const server = http.createServer((req, res) => {
    if (req.url !== '/') {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(html);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    url: `${origin}/`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
