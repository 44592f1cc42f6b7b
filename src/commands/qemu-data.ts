/**
 * What QEMU 7.2 says about the objects qmigd has, recorded from the real binary by
 * test/fixtures/qemu72/capture.ts into data/qemu-7.2/: QOM types and their properties, the QOM
 * tree of each machine type, and the command-line options. Read on first use (most clients never
 * ask), once.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { JsonValue } from '../qmp/json-writer.js';

const DIR = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..', 'data', 'qemu-7.2');

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
  return () => (value ??= JSON.parse(readFileSync(join(DIR, file), 'utf8')) as T);
}

export const qemuData = {
  qomTypes: lazy<QomTypeInfo[]>('qom-types.json'),
  qomProperties: lazy<Record<string, PropertyInfo[]>>('qom-properties.json'),
  /** machine type name → QOM path → its properties and children. */
  qomPaths: lazy<Record<string, Record<string, PropertyInfo[]>>>('qom-paths.json'),
  commandLineOptions: lazy<CommandLineOption[]>('command-line-options.json'),
};
