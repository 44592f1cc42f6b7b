import { readFileSync } from 'node:fs';
import net from 'node:net';
import t from 'tap';
import { freePort } from '../../src/cli/migration-pair.js';

// freePort() picks the port a QEMU or a qmigd started later will listen on. A port from the
// kernel's ephemeral range could meanwhile become the local end of some other connection.
t.test('freePort: bindable ports outside the kernel ephemeral range', async (t) => {
  const [first, last] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  const seen = new Set<number>();
  for (let i = 0; i < 20; i++) {
    const port = await freePort();
    t.ok(port >= 1024 && port <= 65535 && (port < first || port > last), `${port} is outside ${first}-${last}`);
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    await new Promise((r) => server.close(r));
    seen.add(port);
  }
  t.ok(seen.size > 1, `random, not one fixed port (${seen.size} distinct of 20)`);
});
