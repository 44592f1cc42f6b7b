/**
 * Every registered command has an argument and a return schema (the daemon refuses to start
 * otherwise), every reply the tests see is checked against its schema (the test daemons run with
 * QMIGD_VALIDATE=1, which turns a mismatch into an error reply), and query-qmp-schema is a
 * closed, well-formed introspection document a schema-driven client can walk.
 */
import '../helpers/as-qemu-7.2.js';
import t from 'tap';
import { SchemaSet } from '../../src/qmp/schema.js';
import { startDaemon } from '../helpers/daemon.js';
import { QmpClient } from '../helpers/qmp-client.js';

t.test('every command served has both schemas; every schema has a command', async (t) => {
  const schemas = new SchemaSet();
  for (const testHooks of [false, true]) {
    const d = await startDaemon(testHooks ? ['--test-hooks'] : []);
    const c = await QmpClient.at(d.listening[0]!);
    await c.negotiate();
    const served = ((await c.cmd('query-commands')).return as Array<{ name: string }>).map((x) => x.name).sort();
    const expected = [...schemas.commands.values()].filter((s) => testHooks || !s.testHook).map((s) => s.name).sort();
    t.same(served, expected, testHooks ? 'with --test-hooks: every command' : 'without: all but the test hooks');
    for (const name of served) {
      const s = schemas.commands.get(name)!;
      t.ok(s.arguments && s.returns, `${name} has argument and return schemas`, { diagnostic: false });
    }
    c.close();
    await d.stop();
  }
});

t.test('query-qmp-schema is complete and self-consistent', async (t) => {
  const d = await startDaemon();
  t.teardown(() => d.stop());
  const c = await QmpClient.at(d.listening[0]!);
  await c.negotiate();
  const r = await c.cmd('query-qmp-schema');
  t.notOk('error' in r, 'reply validated against its own schema');
  const infos = r.return as Array<Record<string, unknown>>;
  const byName = new Map(infos.map((i) => [i.name as string, i]));
  t.equal(byName.size, infos.length, 'names are unique');
  const refs: string[] = [];
  for (const i of infos) {
    for (const k of ['arg-type', 'ret-type', 'element-type']) if (typeof i[k] === 'string') refs.push(i[k] as string);
    for (const m of (i.members as Array<Record<string, unknown>> | undefined) ?? []) if (typeof m.type === 'string') refs.push(m.type);
    for (const v of (i.variants as Array<Record<string, unknown>> | undefined) ?? []) refs.push(v.type as string);
  }
  for (const ref of refs) t.ok(byName.has(ref), `type ${ref} is defined`, { diagnostic: false });
  t.same(byName.get('query-status'), { name: 'query-status', 'meta-type': 'command', 'arg-type': '0', 'ret-type': byName.get('query-status')!['ret-type'] });
  const statusInfo = byName.get(byName.get('query-status')!['ret-type'] as string)!;
  t.same((statusInfo.members as Array<{ name: string }>).map((m) => m.name), ['running', 'singlestep', 'status']);
  t.equal(byName.get('query-yank')!['allow-oob'], true);
  t.same(byName.get('0'), { name: '0', 'meta-type': 'object', members: [] });
  t.ok(byName.has('SHUTDOWN') && byName.get('SHUTDOWN')!['meta-type'] === 'event');
  // YankInstance as QEMU 7.2 describes it: a union on `type` with a branch for each value.
  const yankArgs = byName.get(byName.get('yank')!['arg-type'] as string)!;
  const instance = byName.get(((byName.get((yankArgs.members as Array<{ type: string }>)[0]!.type)!)['element-type']) as string)!;
  t.same((instance.variants as Array<{ case: string; type: string }>).map((v) => [v.case, (byName.get(v.type)!.members as Array<{ name: string }>).map((m) => m.name)]), [
    ['block-node', ['node-name']],
    ['chardev', ['id']],
    ['migration', []],
  ]);
  c.close();
});
