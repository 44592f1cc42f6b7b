/**
 * A later release's schema is an overlay merged over schema/ (readSchemaFiles): members replace
 * the base's in place, new ones come after, listed ones are removed, and a removal of something
 * the base lacks is a mistake the build reports.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { readSchemaFiles, SCHEMA_DIR } from '../../src/qmp/schema-validators.js';
import { PROFILES } from '../../src/profiles/index.js';
import { SchemaSet } from '../../src/qmp/schema.js';
import { tempDir } from '../helpers/daemon.js';

function write(dir: string, file: string, doc: object): void {
  writeFileSync(join(dir, file), JSON.stringify(doc));
}

t.test('replace in place, add after, remove', async (t) => {
  const dir = tempDir();
  mkdirSync(join(dir, 'next'));
  write(dir, 'm.json', {
    $id: 'x:m', title: 'm',
    $defs: { A: { type: 'string' }, B: { type: 'integer' } },
    commands: { one: { arguments: {}, returns: {} }, two: { arguments: {}, returns: {} } },
  });
  write(join(dir, 'next'), 'm.json', {
    $id: 'x:m', title: 'm',
    $defs: { A: { type: 'boolean' }, C: { type: 'null' } },
    commands: { three: { arguments: {}, returns: {} } },
    'x-qmigd-removed': { commands: ['one'] },
  });
  const base = readSchemaFiles(dir).modules.get('x:m')!;
  const next = readSchemaFiles(dir, 'next').modules.get('x:m')!;
  t.same(Object.keys(base.commands as object), ['one', 'two']);
  t.same(Object.keys(next.commands as object), ['two', 'three']);
  t.same(next.$defs, { A: { type: 'boolean' }, B: { type: 'integer' }, C: { type: 'null' } });
  t.same(Object.keys(next.$defs as object), ['A', 'B', 'C'], 'QAPI order kept');
  t.notOk('x-qmigd-removed' in next, 'the removal list is not part of the merged module');
  t.not(readSchemaFiles(dir).hash, readSchemaFiles(dir, 'next').hash, 'the overlay is part of the hash');

  write(join(dir, 'next'), 'm.json', { $id: 'x:m', title: 'm', 'x-qmigd-removed': { events: ['NOPE'] } });
  t.throws(() => readSchemaFiles(dir, 'next'), /removes events NOPE, which the base does not have/);
});

t.test('every profile\'s schema loads, and its commands validate', async (t) => {
  for (const profile of PROFILES) {
    const schemas = new SchemaSet(SCHEMA_DIR, profile);
    t.ok(schemas.commands.size > 50, `${profile.id}: ${schemas.commands.size} commands`);
    const status = schemas.commands.get('query-status')!;
    const reply = profile.qmp.statusSinglestep ? { running: false, singlestep: false, status: 'prelaunch' } : { running: false, status: 'prelaunch' };
    t.ok(status.validateReturn(reply), `${profile.id}: query-status's reply as the profile makes it`);
  }
});
