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
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ValidateFunction } from 'ajv';

export type JsonSchema = { [key: string]: unknown };
export type Validators = Map<string, ValidateFunction>;

export const SCHEMA_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'schema');
const GENERATED = join(dirname(fileURLToPath(import.meta.url)), 'schema-validators.cjs');
const require = createRequire(import.meta.url);

/** The vocabulary of qmigd's annotations (schema/README.md), which ajv is told to accept. */
const KEYWORDS = ['commands', 'events', 'x-qapi-int', 'x-features', 'x-allow-oob', 'x-union-tag', 'x-qapi-name', 'x-qmigd-test-hook'];

export interface SchemaFiles {
  /** Each module, by its $id. */
  modules: Map<string, JsonSchema>;
  /** Hash of the files, to tell whether generated validators still match them. */
  hash: string;
}

export function readSchemaFiles(dir: string): SchemaFiles {
  const hash = createHash('sha256');
  const modules = new Map<string, JsonSchema>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
    const text = readFileSync(join(dir, file), 'utf8');
    hash.update(file).update(text);
    const doc = JSON.parse(text) as JsonSchema;
    modules.set(String(doc.$id), doc);
  }
  return { modules, hash: hash.digest('hex') };
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

/** The validators of `files`: the generated ones when they match, else compiled now. */
export function loadValidators(files: SchemaFiles): Validators {
  try {
    const generated = require(GENERATED) as { schemaHash: string } & Record<string, ValidateFunction>;
    if (generated.schemaHash === files.hash) {
      return new Map(Object.keys(references(files.modules)).map((key) => [key, generated[key]!]));
    }
  } catch {
    /* not built (yet): compile */
  }
  const ajv = ajvFor(files.modules, false);
  return new Map(Object.entries(references(files.modules)).map(([key, ref]) => [key, ajv.getSchema(ref)!]));
}

/** `npm run build`: writes schema-validators.cjs for schema/. */
export function generateValidators(dir = SCHEMA_DIR, out = GENERATED): void {
  const files = readSchemaFiles(dir);
  const ajv = ajvFor(files.modules, true);
  const { default: standaloneCode } = require('ajv/dist/standalone/index.js') as typeof import('ajv/dist/standalone/index.js');
  const code = standaloneCode(ajv, references(files.modules));
  writeFileSync(out, `${code}\nexports.schemaHash = ${JSON.stringify(files.hash)};\n`);
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === '--generate') generateValidators();
