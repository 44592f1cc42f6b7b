/**
 * The compiled validators of schema/: one per command's arguments and return value, one per
 * event's data, keyed `c:NAME:arguments`, `c:NAME:returns`, `e:NAME`.
 *
 * Compiling them with ajv took 190 ms of every start-up (libvirt starts the emulator for every
 * probe and every domain), so `npm run build` compiles them once, with ajv's standalone code
 * generation, into schema-validators.cjs beside this module; a daemon loads that in a few
 * milliseconds. The generated file carries a hash of the schema files it was made from; if they
 * changed since (or for another directory, as tests use), the validators are compiled here, as
 * before. A schema ajv refuses fails the build, not a start-up.
 *
 * A profile of a later QEMU (src/profiles) reads schema/ with its overlay directory merged over
 * it (see mergeOverlay), and has generated validators of its own.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ValidateFunction } from 'ajv';
import { PROFILES, type QemuProfile } from '../profiles/index.js';

export type JsonSchema = { [key: string]: unknown };
export type Validators = Map<string, ValidateFunction>;

export const SCHEMA_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'schema');
const generatedFile = (profile: QemuProfile): string => join(dirname(fileURLToPath(import.meta.url)), `schema-validators-${profile.id}.cjs`);
const require = createRequire(import.meta.url);

/** The vocabulary of qmigd's annotations (schema/README.md), which ajv is told to accept. */
const KEYWORDS = ['commands', 'events', 'x-qapi-int', 'x-features', 'x-allow-oob', 'x-union-tag', 'x-qapi-name', 'x-qmigd-test-hook'];

export interface SchemaFiles {
  /** Each module, by its $id. */
  modules: Map<string, JsonSchema>;
  /** Hash of the files, to tell whether generated validators still match them. */
  hash: string;
}

/** The modules of `dir`, with those of `dir/overlay` merged over them. */
export function readSchemaFiles(dir: string, overlay?: string): SchemaFiles {
  const hash = createHash('sha256');
  const read = (from: string): JsonSchema[] =>
    readdirSync(from).filter((f) => f.endsWith('.json')).sort().map((file) => {
      const text = readFileSync(join(from, file), 'utf8');
      hash.update(file).update(text);
      return JSON.parse(text) as JsonSchema;
    });
  const modules = new Map<string, JsonSchema>();
  for (const doc of read(dir)) modules.set(String(doc.$id), doc);
  if (overlay) {
    for (const doc of read(join(dir, overlay))) {
      const id = String(doc.$id);
      const base = modules.get(id);
      modules.set(id, base ? mergeOverlay(base, doc) : doc);
    }
  }
  return { modules, hash: hash.digest('hex') };
}

/** The named members of a module an overlay may add, replace or remove. */
const MERGED = ['$defs', 'commands', 'events'] as const;

/**
 * A later release's module: its `$defs`, `commands` and `events` replace the base's of the same
 * name (in place, so QAPI order holds) or come after them; the names listed under
 * `x-qmigd-removed` are gone in that release.
 */
function mergeOverlay(base: JsonSchema, overlay: JsonSchema): JsonSchema {
  const removed = (overlay['x-qmigd-removed'] ?? {}) as Partial<Record<(typeof MERGED)[number], string[]>>;
  const merged: JsonSchema = { ...base };
  for (const key of MERGED) {
    const members: JsonSchema = { ...((base[key] ?? {}) as JsonSchema), ...((overlay[key] ?? {}) as JsonSchema) };
    for (const name of removed[key] ?? []) {
      if (!(name in members)) throw new Error(`schema overlay ${String(overlay.$id)}: removes ${key} ${name}, which the base does not have`);
      delete members[name];
    }
    merged[key] = members;
  }
  return merged;
}

const escapePointer = (s: string): string => s.replace(/~/g, '~0').replace(/\//g, '~1');

/** Every validator's key and the schema reference it validates against. */
function references(modules: Map<string, JsonSchema>): Record<string, string> {
  const refs: Record<string, string> = {};
  for (const [id, doc] of modules) {
    for (const name of Object.keys((doc.commands ?? {}) as JsonSchema)) {
      for (const part of ['arguments', 'returns']) refs[`c:${name}:${part}`] = `${id}#/commands/${escapePointer(name)}/${part}`;
    }
    for (const name of Object.keys((doc.events ?? {}) as JsonSchema)) refs[`e:${name}`] = `${id}#/events/${escapePointer(name)}/data`;
  }
  return refs;
}

function ajvFor(modules: Map<string, JsonSchema>, source: boolean): import('ajv/dist/2020.js').Ajv2020 {
  // Loaded only where validators are compiled: the daemon's start-up does without it.
  const { Ajv2020 } = require('ajv/dist/2020.js') as typeof import('ajv/dist/2020.js');
  const ajv = new Ajv2020({ allErrors: false, strict: true, strictTuples: false, code: { source } });
  ajv.addVocabulary(KEYWORDS);
  for (const doc of modules.values()) ajv.addSchema(doc);
  return ajv;
}

/** The validators of `files`: the profile's generated ones when they match, else compiled now. */
export function loadValidators(files: SchemaFiles, profile: QemuProfile): Validators {
  try {
    const generated = require(generatedFile(profile)) as { schemaHash: string } & Record<string, ValidateFunction>;
    if (generated.schemaHash === files.hash) {
      return new Map(Object.keys(references(files.modules)).map((key) => [key, generated[key]!]));
    }
  } catch {
    /* not built (yet): compile */
  }
  const ajv = ajvFor(files.modules, false);
  return new Map(Object.entries(references(files.modules)).map(([key, ref]) => [key, ajv.getSchema(ref)!]));
}

/** `npm run build`: writes each profile's schema-validators-ID.cjs. */
export function generateValidators(dir = SCHEMA_DIR): void {
  const { default: standaloneCode } = require('ajv/dist/standalone/index.js') as typeof import('ajv/dist/standalone/index.js');
  for (const profile of PROFILES) {
    const files = readSchemaFiles(dir, profile.schemaOverlay);
    const code = standaloneCode(ajvFor(files.modules, true), references(files.modules));
    writeFileSync(generatedFile(profile), `${code}\nexports.schemaHash = ${JSON.stringify(files.hash)};\n`);
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === '--generate') generateValidators();
