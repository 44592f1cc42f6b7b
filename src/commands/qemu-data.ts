/**
 * What the release this process is says about the objects qmigd has, recorded from the real
 * binary by test/fixtures/capture-qemu-data.ts into data/qemu-X.Y/ (the profile's dataDir): QOM
 * types and their properties, the QOM tree of each machine type, the command-line options, and
 * (10.0) the machines' compat-props. Read on first use (most clients never ask), once.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { activeProfile } from '../profiles/index.js';
import type { JsonValue } from '../qmp/json-writer.js';

const DATA = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..', 'data');

export type QomTypeInfo = {
  name: string;
  parent?: string;
  abstract?: boolean;
};

export type PropertyInfo = {
  name: string;
  type: string;
  description?: string;
  'default-value'?: JsonValue;
};

export type CommandLineOption = {
  option: string;
  parameters: Array<{ name: string; type: string; help?: string; default?: string }>;
};

function lazy<T>(file: string): () => T {
  let value: T | undefined;
  return () => (value ??= JSON.parse(readFileSync(join(DATA, activeProfile().dataDir, file), 'utf8')) as T);
}

export const qemuData = {
  qomTypes: lazy<QomTypeInfo[]>('qom-types.json'),
  qomProperties: lazy<Record<string, PropertyInfo[]>>('qom-properties.json'),
  /** machine type name → QOM path → its properties and children. */
  qomPaths: lazy<Record<string, Record<string, PropertyInfo[]>>>('qom-paths.json'),
  commandLineOptions: lazy<CommandLineOption[]>('command-line-options.json'),
  /** machine type name → its compat-props (releases whose query-machines has them). */
  compatProps: lazy<Record<string, JsonValue[]>>('compat-props.json'),
};
