/**
 * query-qmp-schema of each profile against its release's own introspection
 * (test/fixtures/qmp-schema/qemu72-qmp-schema.json and qemu100-qmp-schema.json, QEMU's
 * query-qmp-schema replies). QEMU serves far more commands than qmigd, so the documents are
 * not compared byte for byte: for every command and event qmigd serves, its arguments, return
 * type and event data, resolved through the numbered type names into trees, must be the
 * release's; commands that release lacks must be absent. What qmigd knowingly does otherwise
 * is listed below with the reason, and the test checks that each listed difference is real.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { PROFILES, type ProfileId } from '../../src/profiles/index.js';
import { REPO, startDaemon } from '../helpers/daemon.js';
import { QmpClient } from '../helpers/qmp-client.js';

type Info = Record<string, unknown> & { name: string; 'meta-type': string };

const REFERENCE: Record<ProfileId, string> = {
  '7.2': join(REPO, 'test', 'fixtures', 'qmp-schema', 'qemu72-qmp-schema.json'),
  '10.0': join(REPO, 'test', 'fixtures', 'qmp-schema', 'qemu100-qmp-schema.json'),
};

/** Commands qmigd serves beyond the release (kept for old clients), by release. */
const EXTENSIONS: Record<ProfileId, string[]> = {
  '7.2': ['migrate_set_speed', 'migrate_set_downtime', 'migrate-set-cache-size', 'query-migrate-cache-size'],
  '10.0': [],
};

/** Replies qmigd trims to what it has (one target, no block statistics): a subset of QEMU's. */
const TRIMMED_RETURNS = new Set(['query-target', 'query-cpus-fast', 'query-block', 'query-named-block-nodes', 'query-blockstats']);

/** Known differences not modelled yet, by release, with why. */
const NOT_MODELLED: Record<ProfileId, Record<string, string>> = {
  '7.2': {},
  '10.0': {},
};

/** An introspected entity as a tree: numbered names resolved, QEMU's member order kept. */
function tree(index: Map<string, Info>, name: string, seen: ReadonlySet<string> = new Set()): unknown {
  const e = index.get(name);
  if (!e) return `missing type ${name}`;
  const sub = (n: string): unknown => tree(index, n, new Set([...seen, name]));
  switch (e['meta-type']) {
    case 'builtin':
      return name;
    case 'array':
      return [sub(e['element-type'] as string)];
    case 'enum':
      return { enum: e.values };
    case 'alternate':
      return { alternate: (e.members as Info[]).map((m) => sub(m.type as string)) };
    case 'object': {
      if (seen.has(name)) return 'recursion';
      const members = (e.members as Info[]).map((m) => ({ name: m.name, type: sub(m.type as string), optional: 'default' in m, features: m.features ?? [] }));
      const variants = e.variants ? (e.variants as Info[]).map((v) => ({ case: v.case, type: sub(v.type as string) })) : undefined;
      return { members, tag: e.tag, variants, features: e.features ?? [] };
    }
    case 'command':
      return { arguments: sub(e['arg-type'] as string), returns: sub(e['ret-type'] as string), oob: e['allow-oob'] ?? false, features: e.features ?? [] };
    case 'event':
      return { data: sub(e['arg-type'] as string), features: e.features ?? [] };
    default:
      return e;
  }
}

/** Whether `ours` is `theirs` with members, variants or enum values left out (nothing added or changed). */
function subset(ours: unknown, theirs: unknown): boolean {
  if (Array.isArray(ours) && Array.isArray(theirs)) return ours.length === theirs.length && ours.every((x, i) => subset(x, theirs[i]));
  if (typeof ours !== 'object' || ours === null || typeof theirs !== 'object' || theirs === null) return ours === theirs;
  const o = ours as Record<string, unknown>;
  const r = theirs as Record<string, unknown>;
  if ('enum' in o) return (o.enum as string[]).every((v) => (r.enum as string[] | undefined)?.includes(v));
  if ('members' in o) {
    const theirMembers = new Map(((r.members ?? []) as Array<{ name: string }>).map((m) => [m.name, m]));
    return (o.members as Array<{ name: string }>).every((m) => theirMembers.has(m.name) && subset(m, theirMembers.get(m.name)));
  }
  return Object.keys(o).every((k) => subset(o[k], r[k]));
}

for (const profile of PROFILES) {
  const skip = !existsSync(REFERENCE[profile.id]) && `${REFERENCE[profile.id]} is missing`;
  t.test(`--qemu-version ${profile.id}: every command and event qmigd serves is QEMU ${profile.id}'s`, { skip }, async (t) => {
    const d = await startDaemon(['--qemu-version', profile.id]);
    t.teardown(() => d.stop());
    const c = await QmpClient.at(d.listening[0]!);
    t.teardown(() => c.close());
    await c.negotiate();
    const ours = (await c.cmd('query-qmp-schema')).return as Info[];
    const served = ((await c.cmd('query-commands')).return as Array<{ name: string }>).map((x) => x.name);
    const doc = JSON.parse(readFileSync(REFERENCE[profile.id], 'utf8')) as { return?: Info[] } | Info[];
    const theirs = Array.isArray(doc) ? doc : doc.return!;
    const mine = new Map(ours.map((i) => [i.name, i]));
    const ref = new Map(theirs.map((i) => [i.name, i]));
    const extensions = EXTENSIONS[profile.id];
    const gaps = NOT_MODELLED[profile.id];
    for (const e of ours.filter((i) => i['meta-type'] === 'command' || i['meta-type'] === 'event')) {
      if (e.name.startsWith('__org.qmigd')) continue; // qmigd's own downstream commands
      const what = `${e['meta-type']} ${e.name}`;
      if (extensions.includes(e.name)) {
        t.notOk(ref.has(e.name), `${what}: a qmigd extension QEMU ${profile.id} lacks`);
        continue;
      }
      if (!ref.has(e.name)) {
        t.fail(`${what}: QEMU ${profile.id} has no such ${e['meta-type']}`);
        continue;
      }
      const a = tree(mine, e.name) as Record<string, unknown>;
      const b = tree(ref, e.name) as Record<string, unknown>;
      if (gaps[e.name]) {
        t.notSame(a, b, `${what} differs, as listed: ${gaps[e.name]}`);
      } else if (TRIMMED_RETURNS.has(e.name)) {
        t.same(a.arguments, b.arguments, `${what}: arguments`);
        t.ok(subset(a.returns, b.returns), `${what}: returns a subset of QEMU's`);
      } else {
        t.same(a, b, what);
      }
    }
    for (const name of extensions) t.ok(served.includes(name), `${name} served (extension)`);
    for (const name of Object.values(EXTENSIONS).flat()) {
      if (!extensions.includes(name)) {
        t.notOk(served.includes(name) || mine.has(name), `${name}: not served by ${profile.id}, whose QEMU lacks it`);
        t.match(await c.cmd(name), { error: { class: 'CommandNotFound', desc: `The command ${name} has not been found` } });
      }
    }
  });
}
