/**
 * Faults as the command line gives them: --fault SPEC, either the JSON object fault-add takes or
 * its short form `kind=stall,side=receive,after-bytes=4M,duration-ms=2000` (sizes take K/M/G);
 * and --faults FILE, a list of such objects in YAML or JSON (a timeline: each with its trigger,
 * such as after-ms), or an object whose `faults` member is one. YAML is a superset of JSON: one
 * parser reads both. The schema of __org.qmigd_fault-add
 * checks them all (src/daemon/daemon.ts), as it checks the command's arguments.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { parseSize } from '../cli/size.js';
import type { FaultSpec } from './faults.js';

/** Members whose short-form values are sizes, and those that are plain numbers. */
const SIZES = new Set(['after-bytes', 'bytes-per-second']);
const NUMBERS = new Set(['index', 'after-ms', 'probability', 'seed', 'duration-ms', 'count', 'delay-ms']);

export function parseFaultSpec(text: string): FaultSpec {
  if (text.trimStart().startsWith('{')) return JSON.parse(text) as FaultSpec;
  const spec: Record<string, string | number> = {};
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new Error(`'${part}' is not key=value`);
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (SIZES.has(key)) spec[key] = parseSize(value);
    else if (NUMBERS.has(key)) {
      if (value === '' || !Number.isFinite(Number(value))) throw new Error(`${key}: '${value}' is not a number`);
      spec[key] = Number(value);
    } else spec[key] = value;
  }
  return spec as unknown as FaultSpec;
}

export function readFaultsFile(path: string): FaultSpec[] {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, 'utf8'), { maxAliasCount: 0 });
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message.split('\n')[0]}`);
  }
  const list = Array.isArray(doc) ? doc : (doc as { faults?: unknown } | null)?.faults;
  if (!Array.isArray(list)) throw new Error(`${path}: expected a list of faults, or a mapping with a "faults" list`);
  // Sizes may be written as in the short form (after-bytes: 8M).
  return list.map((spec: unknown) => {
    if (spec === null || typeof spec !== 'object') return spec;
    const out = { ...(spec as Record<string, unknown>) };
    for (const key of SIZES) if (typeof out[key] === 'string') out[key] = parseSize(out[key] as string);
    return out;
  }) as FaultSpec[];
}
