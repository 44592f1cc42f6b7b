/**
 * Values → the exact bytes QEMU's qobject/qjson.c writes: ", " and ": " separators, ASCII only
 * (\uXXXX in upper case, surrogate pairs beyond the BMP), doubles as printf("%.17g"), and object
 * members in QDict iteration order, which is what makes a reply byte-identical to QEMU's.
 */
import { QNum } from './qobject.js';
import { modUtf8Codepoint } from './utf8.js';

/** What handlers may return: plain JSON-like values, bigints for 64-bit integers, QObjects. */
export type JsonValue =
  | null
  | boolean
  | string
  | number
  | bigint
  | QNum
  | PreSerialized
  | JsonValue[]
  | Map<string, JsonValue>
  | { [key: string]: JsonValue | undefined };


const QDICT_BUCKET_MAX = 512;

/** qdict.c's tdb_hash(), modulo the bucket count. */
function qdictBucket(key: string): number {
  const bytes = Buffer.from(key, 'utf8');
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    value = (value + ((bytes[i]! << ((i * 5) % 24)) >>> 0)) >>> 0;
  }
  return ((Math.imul(1103515243, value) + 12345) >>> 0) % QDICT_BUCKET_MAX;
}

const bucketCache = new Map<string, number>();
function bucketOf(key: string): number {
  let b = bucketCache.get(key);
  if (b === undefined) {
    b = qdictBucket(key);
    if (bucketCache.size < 10000) bucketCache.set(key, b);
  }
  return b;
}

/**
 * QDict iterates bucket by bucket, and each bucket is a list with the newest entry first; so keys
 * given in insertion order come out sorted by bucket, later insertions first within a bucket.
 */
export function qdictOrder(keys: string[]): string[] {
  // Replies and events have a few shapes, met again and again: their order is remembered.
  const signature = keys.length <= 64 ? JSON.stringify(keys) : '';
  const small = signature.length > 0 && signature.length <= 1024;
  const known = small ? orderCache.get(signature) : undefined;
  if (known) return known;
  const order = keys
    .map((key, index) => ({ key, index, bucket: bucketOf(key) }))
    .sort((a, b) => a.bucket - b.bucket || b.index - a.index)
    .map((e) => e.key);
  if (small && orderCache.size < 10000) orderCache.set(signature, order);
  return order;
}

const orderCache = new Map<string, string[]>();

/** printf("%.17g", x), including glibc's "inf", "-inf", "nan" and "-nan". */
export function formatDouble(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  const [mantissa, expText] = x.toExponential(16).split('e') as [string, string];
  const exp = Number(expText);
  if (exp < -4 || exp >= 17) {
    const m = stripZeros(mantissa);
    const sign = exp < 0 ? '-' : '+';
    const digits = String(Math.abs(exp)).padStart(2, '0');
    return `${m}e${sign}${digits}`;
  }
  const negative = mantissa.startsWith('-');
  const digits = mantissa.replace('-', '').replace('.', '');
  let text: string;
  if (exp >= 0) text = `${digits.slice(0, exp + 1)}.${digits.slice(exp + 1)}`;
  else text = `0.${'0'.repeat(-exp - 1)}${digits}`;
  return (negative ? '-' : '') + stripZeros(text);
}

function stripZeros(s: string): string {
  return s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s;
}

/** Strings that need no escaping at all: printable ASCII without '"' or '\\'. */
const PLAIN = /^[\x20\x21\x23-\x5b\x5d-\x7e]*$/;

function quote(s: string): string {
  if (PLAIN.test(s)) return `"${s}"`;
  let out = '"';
  // Walk the UTF-8 encoding so that lone surrogates become U+FFFD as QEMU's decoder makes them.
  const bytes = Buffer.from(s, 'utf8');
  let p = 0;
  let plainFrom = -1;
  while (p < bytes.length) {
    const b = bytes[p]!;
    if (b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c) {
      if (plainFrom < 0) plainFrom = p;
      p++;
      continue;
    }
    if (plainFrom >= 0) {
      out += bytes.toString('latin1', plainFrom, p);
      plainFrom = -1;
    }
    let [cp, next] = modUtf8Codepoint(bytes, p);
    p = next;
    switch (cp) {
      case 0x22: out += '\\"'; break;
      case 0x5c: out += '\\\\'; break;
      case 0x08: out += '\\b'; break;
      case 0x0c: out += '\\f'; break;
      case 0x0a: out += '\\n'; break;
      case 0x0d: out += '\\r'; break;
      case 0x09: out += '\\t'; break;
      default:
        if (cp < 0) cp = 0xfffd;
        if (cp > 0xffff) {
          out += `\\u${hex4(0xd800 + ((cp - 0x10000) >> 10))}\\u${hex4(0xdc00 + ((cp - 0x10000) & 0x3ff))}`;
        } else {
          out += `\\u${hex4(cp)}`;
        }
    }
  }
  if (plainFrom >= 0) out += bytes.toString('latin1', plainFrom);
  return `${out}"`;
}

function hex4(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}

export function toQmpJson(value: JsonValue): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean': return value ? 'true' : 'false';
    case 'string': return quote(value);
    case 'bigint': return value.toString();
    case 'number': return Number.isInteger(value) ? value.toString() : formatDouble(value);
  }
  if (value instanceof QNum) {
    return value.kind === 'double' ? formatDouble(Number(value.value)) : value.value.toString();
  }
  if (value instanceof PreSerialized) return value.text;
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    let out = '[';
    for (let i = 0; i < value.length; i++) out += (i ? ', ' : '') + toQmpJson(value[i]!);
    return `${out}]`;
  }
  const map = value instanceof Map ? value : undefined;
  const plain = value as { [key: string]: JsonValue | undefined };
  const keys = map ? [...map.keys()] : Object.keys(plain).filter((k) => plain[k] !== undefined);
  if (keys.length === 0) return '{}';
  let out = '{';
  for (const k of qdictOrder(keys)) out += `${out.length > 1 ? ', ' : ''}${quote(k)}: ${toQmpJson((map ? map.get(k) : plain[k])!)}`;
  return `${out}}`;
}

/**
 * A value whose text is worked out once and reused: a large reply that never changes
 * (query-qmp-schema) costs nothing to send again.
 */
export class PreSerialized {
  readonly text: string;

  constructor(readonly value: JsonValue) {
    this.text = toQmpJson(value);
  }
}
