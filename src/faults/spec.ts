/**
 * Faults as the command line gives them: --fault SPEC, either the JSON object fault-add takes or
 * its short form `kind=stall,side=receive,after-bytes=4M,duration-ms=2000` (sizes take K/M/G);
 * and --faults FILE, a JSON array of such objects (a timeline: each with its trigger, such as
 * after-ms), or an object whose `faults` member is one. The schema of __org.qmigd_fault-add
 * checks them all (src/daemon/daemon.ts), as it checks the command's arguments.
 */
import { readFileSync } from 'node:fs';
import { parseSize } from '../cli/size.js';
import type { FaultSpec } from './faults.js';

/** Members whose short-form values are sizes, and those that are plain numbers. */
const SIZES = new Set(['after-bytes', 'bytes-per-second']);
const NUMBERS = new Set(['after-ms', 'probability', 'seed', 'duration-ms', 'count', 'delay-ms']);

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
  const doc = JSON.parse(readFileSync(path, 'utf8')) as unknown;
  const list = Array.isArray(doc) ? doc : (doc as { faults?: unknown } | null)?.faults;
  if (!Array.isArray(list)) throw new Error(`${path}: expected a JSON array of faults, or an object with a "faults" array`);
  return list as FaultSpec[];
}
