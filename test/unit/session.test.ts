/**
 * The QMP session in-process, over a connection that records what it is sent: a handler that
 * fails unexpectedly costs its request only (the reply keeps the request's id), and monitors
 * take turns, so one with a thousand queued requests holds back neither another monitor nor the
 * event loop (timers, I/O, the migration).
 */
import '../helpers/as-qemu-7.2.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import t from 'tap';
import { CommandRegistry } from '../../src/qmp/registry.js';
import { SchemaSet } from '../../src/qmp/schema.js';
import { QmpServer } from '../../src/qmp/server.js';
import type { Connection, QmpSession } from '../../src/qmp/session.js';
import { tempDir } from '../helpers/daemon.js';

const EMPTY = { type: 'object', properties: {}, additionalProperties: false };

/** A schema module with qmp_capabilities and the commands a test needs, all without arguments. */
function registry(commands: string[]): CommandRegistry {
  const dir = tempDir();
  const module = {
    $id: 'qmigd:test',
    title: 'test',
    commands: Object.fromEntries(['qmp_capabilities', ...commands].map((c) => [c, { arguments: EMPTY, returns: {} }])),
  };
  writeFileSync(join(dir, 'test.json'), JSON.stringify(module));
  const r = new CommandRegistry(new SchemaSet(dir));
  r.register('qmp_capabilities', (_a, { session }) => {
    session.enterCommandMode([]);
    return {};
  });
  return r;
}

class RecordingConnection implements Connection {
  readonly lines: string[] = [];
  readonly description = 'test';
  readonly queuedOutput = 0;
  readonly queuedInput = 0;
  waiters: Array<() => void> = [];
  send(text: string): void {
    this.lines.push(text);
    this.waiters.splice(0).forEach((w) => w());
  }
  close(): void {}
  abort(): void {}
  pauseInput(): void {}
  resumeInput(): void {}

  async until(n: number): Promise<void> {
    while (this.lines.length < n) await new Promise<void>((r) => this.waiters.push(r));
  }
}

function server(r: CommandRegistry): QmpServer {
  return new QmpServer({ registry: r, log: pino({ level: 'silent' }), version: { major: 7, minor: 2, micro: 0, package: 'test' }, validate: false });
}

async function negotiated(s: QmpServer): Promise<{ conn: RecordingConnection; session: QmpSession }> {
  const conn = new RecordingConnection();
  const session = s.accept(conn);
  session.feed(Buffer.from('{"execute":"qmp_capabilities"}'));
  await conn.until(2);
  return { conn, session };
}

t.test('a handler that throws: an error reply that keeps the id, and the session goes on', async (t) => {
  const r = registry(['boom', 'fine']);
  r.register('boom', () => {
    throw new TypeError('Cannot convert a BigInt value to a number');
  });
  r.register('fine', () => ({}));
  const { conn, session } = await negotiated(server(r));
  session.feed(Buffer.from('{"execute":"boom","id":{"n":[42]}}{"execute":"fine","id":"next"}'));
  await conn.until(4);
  t.same(conn.lines.slice(2), [
    '{"id": {"n": [42]}, "error": {"class": "GenericError", "desc": "qmigd internal error: Cannot convert a BigInt value to a number"}}',
    '{"return": {}, "id": "next"}',
  ]);
});

t.test('monitors take turns: a thousand queued requests do not hold back another monitor', async (t) => {
  const order: string[] = [];
  const r = registry(['work']);
  r.register('work', (_a, { session }) => {
    order.push(session === busy.session ? 'busy' : 'other');
    return {};
  });
  const s = server(r);
  const busy = await negotiated(s);
  const other = await negotiated(s);
  let doneWhenTimerFired = -1;
  setTimeout(() => (doneWhenTimerFired = order.length), 0);
  busy.session.feed(Buffer.from('{"execute":"work"}'.repeat(1000)));
  other.session.feed(Buffer.from('{"execute":"work"}'));
  await other.conn.until(3);
  t.ok(order.indexOf('other') < 10, `the other monitor's request ran after ${order.indexOf('other')} of the busy one's`);
  await busy.conn.until(1002);
  t.equal(order.length, 1001, 'all served');
  t.ok(doneWhenTimerFired >= 0 && doneWhenTimerFired < 1001, `a timer ran after ${doneWhenTimerFired} requests, not after all of them`);
});
