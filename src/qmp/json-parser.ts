/**
 * A message's tokens → QObject, as qobject/json-parser.c does it: the first error wins, every
 * message starts "JSON parse error, ", integers become int64, else uint64, else double, and
 * strings accept single quotes, `\'` and QEMU's modified UTF-8.
 *
 * The input is what the streamer (framing.ts) keeps of a message: the text of its tokens, each
 * followed by one space, so a message costs about its own bytes until it is parsed. QEMU's
 * parser is recursive descent over a token list; this one is the same grammar with an explicit
 * stack, so that a parse can stop after a budget of work and resume later: a message of 64 MiB
 * never holds the event loop for more than one slice.
 *
 * Only what a request can use is built: a top-level object's `execute`, `exec-oob`, `arguments`
 * and `id`. Everything else (other members, whose names alone make the request wrong; a message
 * that is no object at all) is only checked, so that a million-element array costs a scan, not a
 * million objects. The result is the same request, and the same first error, as QEMU's.
 */
import { QNum, type QDict, type QObject } from './qobject.js';
import { isValidCodepoint, modUtf8Codepoint } from './utf8.js';

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

const SEP = 0x20;
const LCURLY = 0x7b;
const RCURLY = 0x7d;
const LSQUARE = 0x5b;
const RSQUARE = 0x5d;
const COLON = 0x3a;
const COMMA = 0x2c;
const DQUOTE = 0x22;
const SQUOTE = 0x27;
const BACKSLASH = 0x5c;

/** What a token costs of a slice's budget beyond its bytes. */
const TOKEN_COST = 16;
/** About what a built value costs in memory: a QNum, an array slot, a Map entry. */
const NODE_BYTES = 64;

/** Where a string token's text is being decoded, when that takes more than one slice. */
interface StringInProgress {
  /** Whether the string itself is wanted (a built value or a key), or only checked. */
  keep: boolean;
  quote: number;
  /** Next byte to decode. */
  p: number;
  /** The closing quote. */
  end: number;
  parts: string[];
}

/**
 * The members whose value qmp_dispatch() reads, with the containers it can use there: `execute`
 * must be a string and `arguments` an object, so any other container there only needs checking.
 */
const USED_MEMBERS = new Map([['execute', ''], ['exec-oob', ''], ['arguments', '{'], ['id', '{[']]);

/** Stands for a value that was checked, not built; the request never reads it. */
const CHECKED = null;

/**
 * A container being parsed. A built one collects its values (list, dict); a checked one only
 * remembers its keys, for QEMU's duplicate-key error.
 */
type Frame =
  | { kind: 'array'; list?: QObject[] }
  | { kind: 'object'; dict?: QDict; keys?: Set<string>; key?: string };

/**
 * One message's parse. run() works until the value is complete or `budget` bytes of work are
 * spent; call it again to go on. Afterwards `error` or `value` is set.
 */
export class JsonParse {
  error?: string;
  value?: QObject;
  /** About how much memory the values built so far take (for the monitors' memory budget). */
  builtBytes = 0;
  private pos = 0;
  private readonly stack: Frame[] = [];
  private string?: StringInProgress;
  private finished = false;

  /** `whole`: build every value (for tests and tools); else only what a request can use. */
  constructor(
    private readonly bytes: Buffer,
    private readonly whole = false,
  ) {}

  /** Returns true once the parse is over (with a value or an error). */
  run(budget: number): boolean {
    while (!this.finished && budget > 0) {
      if (this.string) {
        budget -= this.continueString(budget);
        continue;
      }
      budget -= this.valueStep();
    }
    return this.finished;
  }

  /** Runs to the end in one go (for small messages and tests). */
  runToEnd(): { value: QObject } | { error: string } {
    this.run(Infinity);
    return this.error !== undefined ? { error: this.error } : { value: this.value! };
  }

  private fail(msg: string): void {
    this.error = `JSON parse error, ${msg}`;
    this.finished = true;
  }

  /**
   * Whether the value about to be read is built: inside a built container, unless it is a
   * member of the top-level object that qmp_dispatch() does not read.
   */
  private building(first: number): boolean {
    if (this.whole) return true;
    const f = this.stack.at(-1);
    if (!f) return first === LCURLY;
    if (f.kind === 'array') return f.list !== undefined;
    if (!f.dict) return false;
    if (this.stack.length > 1 || f.key === undefined) return true;
    const containers = USED_MEMBERS.get(f.key);
    if (containers === undefined) return false;
    return (first !== LCURLY && first !== LSQUARE) || containers.includes(String.fromCharCode(first));
  }

  /** parse_value() at `pos`: a scalar is delivered at once, a container pushes a frame. */
  private valueStep(): number {
    const { bytes } = this;
    const at = this.pos;
    if (at >= bytes.length) {
      this.fail('premature EOI');
      return 1;
    }
    const c = bytes[at]!;
    const build = this.building(c);
    if (c === LCURLY || c === LSQUARE) {
      this.pos = at + 2;
      if (this.pos >= bytes.length) {
        this.fail('premature EOI');
      } else if (bytes[this.pos] === (c === LCURLY ? RCURLY : RSQUARE)) {
        this.pos += 2;
        this.deliver(!build ? CHECKED : c === LCURLY ? new Map() : []);
      } else if (c === LCURLY) {
        this.stack.push(build ? { kind: 'object', dict: new Map() } : { kind: 'object', keys: new Set() });
      } else {
        this.stack.push(build ? { kind: 'array', list: [] } : { kind: 'array' });
      }
      if (build) this.builtBytes += NODE_BYTES;
      return TOKEN_COST;
    }
    if (c === DQUOTE || c === SQUOTE) {
      const top = this.stack.at(-1);
      const isKey = top?.kind === 'object' && top.key === undefined;
      this.string = { keep: build || isKey, quote: c, p: at + 1, end: stringEnd(bytes, at), parts: [] };
      if (this.string.keep) this.builtBytes += NODE_BYTES;
      return TOKEN_COST;
    }
    const end = bytes.indexOf(SEP, at);
    this.pos = end + 1;
    if (build) this.builtBytes += NODE_BYTES;
    if (c >= 0x61 && c <= 0x7a) {
      const word = bytes.toString('latin1', at, end);
      if (word === 'true') this.deliver(build ? true : CHECKED);
      else if (word === 'false') this.deliver(build ? false : CHECKED);
      else if (word === 'null') this.deliver(null);
      else this.fail(`invalid keyword '${word}'`);
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      this.deliver(build ? number(bytes.toString('latin1', at, end)) : CHECKED);
    } else {
      // ] } : , where a value belongs
      this.pos = at;
      this.fail('expecting value');
    }
    return TOKEN_COST + end - at;
  }

  /** The next structural token's first byte (consumed), or -1 at the end of the message. */
  private pop(): number {
    if (this.pos >= this.bytes.length) return -1;
    const c = this.bytes[this.pos]!;
    this.pos += 2;
    return c;
  }

  /** A value is complete: it goes into the enclosing container, which may complete in turn. */
  private deliver(v: QObject): void {
    for (;;) {
      const f = this.stack.at(-1);
      if (!f) {
        this.value = v;
        this.finished = true;
        return;
      }
      if (f.kind === 'array') {
        f.list?.push(v);
        const t = this.pop();
        if (t < 0) return this.fail('premature EOI');
          if (t === RSQUARE) {
          this.stack.pop();
          v = f.list ?? CHECKED;
          continue;
        }
        if (t !== COMMA) return this.fail('expected separator in list');
        return;
      }
      if (f.key === undefined) {
        // parse_pair(): the value just read is the key
        if (typeof v !== 'string') return this.fail('key is not a string in object');
        const t = this.pop();
        if (t < 0) return this.fail('premature EOI');
        if (t !== COLON) return this.fail('missing : in object pair');
        f.key = v;
        return;
      }
      if (f.dict ? f.dict.has(f.key) : f.keys!.has(f.key)) return this.fail('duplicate key');
      if (f.dict) f.dict.set(f.key, v);
      else f.keys!.add(f.key);
      f.key = undefined;
      const t = this.pop();
      if (t < 0) return this.fail('premature EOI');
      if (t === RCURLY) {
        this.stack.pop();
        v = f.dict ?? CHECKED;
        continue;
      }
      if (t !== COMMA) return this.fail('expected separator in dict');
      if (this.pos >= this.bytes.length) return this.fail('premature EOI');
      return;
    }
  }

  /** parse_string(), a slice at a time; returns the work done. */
  private continueString(budget: number): number {
    const s = this.string!;
    const { bytes } = this;
    const start = s.p;
    const stop = Math.min(s.end, s.p + Math.max(budget, 64));
    let out = '';
    while (s.p < stop) {
      // A run of plain ASCII is taken as it is (the closing quote is at `end`, past `stop`).
      let q = s.p;
      while (q < stop && bytes[q]! !== BACKSLASH && bytes[q]! < 0x80) q++;
      if (q > s.p) {
        if (s.keep) out += bytes.toString('latin1', s.p, q);
        s.p = q;
        continue;
      }
      const cp = bytes[s.p] === BACKSLASH ? this.escape(s) : this.utf8(s);
      if (cp === undefined) {
        this.string = undefined;
        return s.p - start + 1;
      }
      if (s.keep) out += String.fromCodePoint(cp);
    }
    if (s.keep) {
      s.parts.push(out);
      this.builtBytes += out.length;
    }
    if (s.p >= s.end) {
      this.string = undefined;
      this.pos = s.end + 2;
      this.deliver(!s.keep ? CHECKED : s.parts.length === 1 ? s.parts[0]! : s.parts.join(''));
    }
    return s.p - start + 1;
  }

  private escape(s: StringInProgress): number | undefined {
    const { bytes } = this;
    const beg = s.p;
    const esc = bytes[s.p + 1]!;
    s.p += 2;
    switch (esc) {
      case DQUOTE: case SQUOTE: case BACKSLASH: case 0x2f: return esc;
      case 0x62: return 0x08; // b
      case 0x66: return 0x0c; // f
      case 0x6e: return 0x0a; // n
      case 0x72: return 0x0d; // r
      case 0x74: return 0x09; // t
      case 0x75: { // u
        let cp = hex4(bytes, s.p, s.end);
        s.p += 4;
        if (cp >= 0xd800 && cp <= 0xdbff && bytes[s.p] === BACKSLASH && bytes[s.p + 1] === 0x75) {
          const trailing = hex4(bytes, s.p + 2, s.end);
          if (trailing >= 0xdc00 && trailing <= 0xdfff) {
            cp = 0x10000 + ((cp & 0x3ff) << 10) + (trailing & 0x3ff);
            s.p += 6;
          } else cp = -1;
        }
        if (!isValidCodepoint(cp)) {
          this.fail(`${bytes.toString('latin1', beg, Math.min(s.p, s.end))} is not a valid Unicode character`);
          return undefined;
        }
        return cp;
      }
      default:
        this.fail('invalid escape sequence in string');
        return undefined;
    }
  }

  private utf8(s: StringInProgress): number | undefined {
    const [cp, next] = modUtf8Codepoint(this.bytes, s.p, s.end);
    if (cp < 0) {
      this.fail('invalid UTF-8 sequence in string');
      return undefined;
    }
    s.p = next;
    return cp;
  }
}

/** The closing quote of the string token at `at`: the first one not escaped by a backslash. */
function stringEnd(bytes: Buffer, at: number): number {
  const quote = bytes[at]!;
  let p = at + 1;
  for (;;) {
    const q = bytes.indexOf(quote, p);
    let slashes = 0;
    while (bytes[q - 1 - slashes] === BACKSLASH) slashes++;
    if (slashes % 2 === 0) return q;
    p = q + 1;
  }
}

function number(text: string): QNum {
  if (!/[.eE]/.test(text)) {
    const n = BigInt(text);
    if (n >= INT64_MIN && n <= INT64_MAX) return new QNum('int', toIntValue(n));
    if (n > 0n && n <= UINT64_MAX) return new QNum('uint', toIntValue(n));
  }
  return new QNum('double', Number(text));
}

/** Four hex digits at `at` (none past `end`), or -1. */
function hex4(bytes: Buffer, at: number, end: number): number {
  let cp = 0;
  for (let i = 0; i < 4; i++) {
    const d = at + i < end ? parseInt(String.fromCharCode(bytes[at + i]!), 16) : NaN;
    if (Number.isNaN(d)) return -1;
    cp = (cp << 4) | d;
  }
  return cp;
}

/** Integers are JS numbers when exact, bigints otherwise. */
function toIntValue(n: bigint): number | bigint {
  return n >= -(2n ** 53n) && n <= 2n ** 53n ? Number(n) : n;
}

/** Parses a message at once, building every value. */
export function parseMessage(bytes: Buffer): { value: QObject } | { error: string } {
  return new JsonParse(bytes, true).runToEnd();
}
