/**
 * Tokens → QObject, as qobject/json-parser.c does it: the first error wins, every message starts
 * "JSON parse error, ", integers become int64, else uint64, else double, and strings accept
 * single quotes, `\'` and QEMU's modified UTF-8.
 */
import { QNum, type QDict, type QObject } from './qobject.js';
import { isValidCodepoint, modUtf8Codepoint } from './utf8.js';

export const enum TokenType {
  ERROR = 0,
  LCURLY = 100,
  RCURLY,
  LSQUARE,
  RSQUARE,
  COLON,
  COMMA,
  INTEGER,
  FLOAT,
  KEYWORD,
  STRING,
}

export interface Token {
  type: TokenType;
  text: Buffer;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

class Parser {
  private pos = 0;
  err: string | undefined;

  constructor(private readonly tokens: Token[]) {}

  private error(msg: string): void {
    if (this.err === undefined) this.err = `JSON parse error, ${msg}`;
  }

  private peek(): Token | undefined {
    return this.tokens[this.pos];
  }

  private pop(): Token | undefined {
    return this.tokens[this.pos++];
  }

  value(): QObject | undefined {
    const token = this.peek();
    if (!token) {
      this.error('premature EOI');
      return undefined;
    }
    switch (token.type) {
      case TokenType.LCURLY: return this.object();
      case TokenType.LSQUARE: return this.array();
      case TokenType.INTEGER:
      case TokenType.FLOAT:
      case TokenType.STRING: return this.literal();
      case TokenType.KEYWORD: return this.keyword();
      default:
        this.error('expecting value');
        return undefined;
    }
  }

  private object(): QDict | undefined {
    this.pop();
    const dict: QDict = new Map();
    let token = this.peek();
    if (!token) {
      this.error('premature EOI');
      return undefined;
    }
    if (token.type === TokenType.RCURLY) {
      this.pop();
      return dict;
    }
    if (!this.pair(dict)) return undefined;
    token = this.pop();
    if (!token) {
      this.error('premature EOI');
      return undefined;
    }
    while (token.type !== TokenType.RCURLY) {
      if (token.type !== TokenType.COMMA) {
        this.error('expected separator in dict');
        return undefined;
      }
      if (!this.pair(dict)) return undefined;
      token = this.pop();
      if (!token) {
        this.error('premature EOI');
        return undefined;
      }
    }
    return dict;
  }

  private pair(dict: QDict): boolean {
    if (!this.peek()) {
      this.error('premature EOI');
      return false;
    }
    const key = this.value();
    if (typeof key !== 'string') {
      this.error('key is not a string in object');
      return false;
    }
    const colon = this.pop();
    if (!colon) {
      this.error('premature EOI');
      return false;
    }
    if (colon.type !== TokenType.COLON) {
      this.error('missing : in object pair');
      return false;
    }
    const value = this.value();
    if (value === undefined) {
      this.error('Missing value in dict');
      return false;
    }
    if (dict.has(key)) {
      this.error('duplicate key');
      return false;
    }
    dict.set(key, value);
    return true;
  }

  private array(): QObject[] | undefined {
    this.pop();
    const list: QObject[] = [];
    let token = this.peek();
    if (!token) {
      this.error('premature EOI');
      return undefined;
    }
    if (token.type === TokenType.RSQUARE) {
      this.pop();
      return list;
    }
    for (;;) {
      const item = this.value();
      if (item === undefined) {
        this.error('expecting value');
        return undefined;
      }
      list.push(item);
      token = this.pop();
      if (!token) {
        this.error('premature EOI');
        return undefined;
      }
      if (token.type === TokenType.RSQUARE) return list;
      if (token.type !== TokenType.COMMA) {
        this.error('expected separator in list');
        return undefined;
      }
    }
  }

  private keyword(): QObject | undefined {
    const word = this.pop()!.text.toString('latin1');
    if (word === 'true') return true;
    if (word === 'false') return false;
    if (word === 'null') return null;
    this.error(`invalid keyword '${word}'`);
    return undefined;
  }

  private literal(): QObject | undefined {
    const token = this.pop()!;
    if (token.type === TokenType.STRING) return this.string(token.text);
    const text = token.text.toString('latin1');
    if (token.type === TokenType.INTEGER) {
      const n = BigInt(text);
      if (n >= INT64_MIN && n <= INT64_MAX) return new QNum('int', toIntValue(n));
      if (n > 0n && n <= UINT64_MAX) return new QNum('uint', toIntValue(n));
    }
    return new QNum('double', Number(text));
  }

  private string(text: Buffer): string | undefined {
    const quote = text[0]!;
    let out = '';
    let p = 1;
    while (text[p] !== quote) {
      if (text[p] === 0x5c) {
        const beg = p++;
        const esc = String.fromCharCode(text[p++]!);
        switch (esc) {
          case '"': case "'": case '\\': case '/': out += esc; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            let cp = hex4(text, p);
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && text[p] === 0x5c && text[p + 1] === 0x75) {
              const trailing = hex4(text, p + 2);
              if (trailing >= 0xdc00 && trailing <= 0xdfff) {
                cp = 0x10000 + ((cp & 0x3ff) << 10) + (trailing & 0x3ff);
                p += 6;
              } else cp = -1;
            }
            if (!isValidCodepoint(cp)) {
              const shown = text.subarray(beg, Math.min(p, text.length - 1)).toString('latin1');
              this.error(`${shown} is not a valid Unicode character`);
              return undefined;
            }
            out += String.fromCodePoint(cp);
            break;
          }
          default:
            this.error('invalid escape sequence in string');
            return undefined;
        }
      } else {
        const [cp, next] = modUtf8Codepoint(text, p, text.length - 1);
        if (cp < 0) {
          this.error('invalid UTF-8 sequence in string');
          return undefined;
        }
        out += String.fromCodePoint(cp);
        p = next;
      }
    }
    return out;
  }
}

function hex4(text: Buffer, at: number): number {
  let cp = 0;
  for (let i = 0; i < 4; i++) {
    const d = parseInt(String.fromCharCode(text[at + i] ?? 0), 16);
    if (Number.isNaN(d)) return -1;
    cp = (cp << 4) | d;
  }
  return cp;
}

/** Integers are JS numbers when exact, bigints otherwise. */
function toIntValue(n: bigint): number | bigint {
  return n >= -(2n ** 53n) && n <= 2n ** 53n ? Number(n) : n;
}

export function parseTokens(tokens: Token[]): { value: QObject } | { error: string } {
  const parser = new Parser(tokens);
  const value = parser.value();
  if (parser.err !== undefined || value === undefined) return { error: parser.err ?? 'JSON parse error, expecting value' };
  return { value };
}
