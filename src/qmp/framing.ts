/**
 * Bytes → JSON messages, exactly as QEMU's qobject/json-lexer.c and json-streamer.c do it.
 *
 * A push parser: feed() takes any chunk of bytes, however a message is split. The lexer is QEMU's
 * state table (same states, same lookahead rule), so a bad token, its recovery (skip to a
 * structural character, a control character or 0xFE/0xFF) and the "stray '%s'" text match
 * QEMU's. The streamer counts brackets and hands a balanced token run to the parser, with QEMU's
 * per-message limits on token text, token count and nesting.
 */
import { parseTokens, type Token, TokenType } from './json-parser.js';
import type { QObject } from './qobject.js';
import { decodeLenient } from './utf8.js';

export const MAX_TOKEN_SIZE = 64 * 1024 * 1024;
export const MAX_TOKEN_COUNT = 2 * 1024 * 1024;
export const MAX_NESTING = 1024;

export type FramingResult = { value: QObject; error?: undefined } | { value?: undefined; error: string };

// Lexer states, numbered as in json-lexer.c; token types (>= 100) are terminal.
const enum S {
  ERROR = 0,
  IN_RECOVERY = 1,
  IN_DQ_STRING_ESCAPE,
  IN_DQ_STRING,
  IN_SQ_STRING_ESCAPE,
  IN_SQ_STRING,
  IN_ZERO,
  IN_EXP_DIGITS,
  IN_EXP_SIGN,
  IN_EXP_E,
  IN_MANTISSA,
  IN_MANTISSA_DIGITS,
  IN_DIGITS,
  IN_SIGN,
  IN_KEYWORD,
  IN_START,
  COUNT,
}
const LOOKAHEAD = 0x80;


/** The lexer's transition table: next = TABLE[state * 256 + byte]; bit 0x80 = don't consume. */
const TABLE = buildTable();

function buildTable(): Uint8Array {
  // Token types are 100+; stored as (type - 100 + 0x40) to fit beside states in a byte.
  const t = new Uint8Array(S.COUNT * 256); // default ERROR
  const set = (state: S, from: number, to: number, next: number): void => {
    for (let c = from; c <= to; c++) t[state * 256 + c] = next;
  };
  const ch = (c: string): number => c.charCodeAt(0);
  const tok = (type: TokenType): number => type - 100 + 0x40;
  const terminal = (state: S, type: TokenType): void => set(state, 0, 255, tok(type) | LOOKAHEAD);

  set(S.IN_RECOVERY, 0, 0x1f, S.IN_START | LOOKAHEAD);
  set(S.IN_RECOVERY, 0x20, 0xfd, S.IN_RECOVERY);
  set(S.IN_RECOVERY, 0xfe, 0xff, S.IN_START | LOOKAHEAD);
  set(S.IN_RECOVERY, 9, 9, S.IN_RECOVERY);
  for (const c of '[]{}:,') set(S.IN_RECOVERY, ch(c), ch(c), S.IN_START | LOOKAHEAD);

  set(S.IN_DQ_STRING_ESCAPE, 0x20, 0xfd, S.IN_DQ_STRING);
  set(S.IN_DQ_STRING, 0x20, 0xfd, S.IN_DQ_STRING);
  set(S.IN_DQ_STRING, ch('\\'), ch('\\'), S.IN_DQ_STRING_ESCAPE);
  set(S.IN_DQ_STRING, ch('"'), ch('"'), tok(TokenType.STRING));
  set(S.IN_SQ_STRING_ESCAPE, 0x20, 0xfd, S.IN_SQ_STRING);
  set(S.IN_SQ_STRING, 0x20, 0xfd, S.IN_SQ_STRING);
  set(S.IN_SQ_STRING, ch('\\'), ch('\\'), S.IN_SQ_STRING_ESCAPE);
  set(S.IN_SQ_STRING, ch("'"), ch("'"), tok(TokenType.STRING));

  terminal(S.IN_ZERO, TokenType.INTEGER);
  set(S.IN_ZERO, ch('0'), ch('9'), S.ERROR);
  set(S.IN_ZERO, ch('.'), ch('.'), S.IN_MANTISSA);
  set(S.IN_ZERO, ch('e'), ch('e'), S.IN_EXP_E);
  set(S.IN_ZERO, ch('E'), ch('E'), S.IN_EXP_E);

  terminal(S.IN_EXP_DIGITS, TokenType.FLOAT);
  set(S.IN_EXP_DIGITS, ch('0'), ch('9'), S.IN_EXP_DIGITS);
  set(S.IN_EXP_SIGN, ch('0'), ch('9'), S.IN_EXP_DIGITS);
  set(S.IN_EXP_E, ch('-'), ch('-'), S.IN_EXP_SIGN);
  set(S.IN_EXP_E, ch('+'), ch('+'), S.IN_EXP_SIGN);
  set(S.IN_EXP_E, ch('0'), ch('9'), S.IN_EXP_DIGITS);

  terminal(S.IN_MANTISSA_DIGITS, TokenType.FLOAT);
  set(S.IN_MANTISSA_DIGITS, ch('0'), ch('9'), S.IN_MANTISSA_DIGITS);
  set(S.IN_MANTISSA_DIGITS, ch('e'), ch('e'), S.IN_EXP_E);
  set(S.IN_MANTISSA_DIGITS, ch('E'), ch('E'), S.IN_EXP_E);
  set(S.IN_MANTISSA, ch('0'), ch('9'), S.IN_MANTISSA_DIGITS);

  terminal(S.IN_DIGITS, TokenType.INTEGER);
  set(S.IN_DIGITS, ch('0'), ch('9'), S.IN_DIGITS);
  set(S.IN_DIGITS, ch('e'), ch('e'), S.IN_EXP_E);
  set(S.IN_DIGITS, ch('E'), ch('E'), S.IN_EXP_E);
  set(S.IN_DIGITS, ch('.'), ch('.'), S.IN_MANTISSA);
  set(S.IN_SIGN, ch('0'), ch('0'), S.IN_ZERO);
  set(S.IN_SIGN, ch('1'), ch('9'), S.IN_DIGITS);

  terminal(S.IN_KEYWORD, TokenType.KEYWORD);
  set(S.IN_KEYWORD, ch('a'), ch('z'), S.IN_KEYWORD);

  set(S.IN_START, ch('"'), ch('"'), S.IN_DQ_STRING);
  set(S.IN_START, ch("'"), ch("'"), S.IN_SQ_STRING);
  set(S.IN_START, ch('0'), ch('0'), S.IN_ZERO);
  set(S.IN_START, ch('1'), ch('9'), S.IN_DIGITS);
  set(S.IN_START, ch('-'), ch('-'), S.IN_SIGN);
  set(S.IN_START, ch('{'), ch('{'), tok(TokenType.LCURLY));
  set(S.IN_START, ch('}'), ch('}'), tok(TokenType.RCURLY));
  set(S.IN_START, ch('['), ch('['), tok(TokenType.LSQUARE));
  set(S.IN_START, ch(']'), ch(']'), tok(TokenType.RSQUARE));
  set(S.IN_START, ch(','), ch(','), tok(TokenType.COMMA));
  set(S.IN_START, ch(':'), ch(':'), tok(TokenType.COLON));
  set(S.IN_START, ch('a'), ch('z'), S.IN_KEYWORD);
  for (const c of ' \t\r\n') set(S.IN_START, ch(c), ch(c), S.IN_START);
  return t;
}

/**
 * One connection's JSON message parser. `emit` receives each complete message or error in
 * order, synchronously, from within feed().
 */
export class JsonMessageParser {
  private state: number = S.IN_START;
  /** Bytes of the token being lexed: finished pieces plus [tokenStart, pos) of the chunk. */
  private tokenParts: Buffer[] = [];
  private tokenPartsLen = 0;
  private tokens: Token[] = [];
  private tokenSize = 0;
  private braceCount = 0;
  private bracketCount = 0;

  private stopRequested = false;

  constructor(private readonly emit: (result: FramingResult) => void) {}

  /**
   * Asks feed() to return right after the message being emitted, as QEMU stops reading a
   * monitor whose request queue is full. Call it from within the emit callback.
   */
  stop(): void {
    this.stopRequested = true;
  }

  /** Lexes a chunk; returns how many bytes it took (all of them unless stop() was called). */
  feed(chunk: Buffer): number {
    this.stopRequested = false;
    let tokenStart = 0;
    let pos = 0;
    const len = chunk.length;
    while (pos < len) {
      // Fast path through string bodies: the common bytes just stay in the token.
      if (this.state === S.IN_DQ_STRING || this.state === S.IN_SQ_STRING) {
        const quote = this.state === S.IN_DQ_STRING ? 0x22 : 0x27;
        let p = pos;
        while (p < len) {
          const b = chunk[p]!;
          if (b === quote || b === 0x5c || b < 0x20 || b > 0xfd) break;
          p++;
        }
        if (p > pos && this.tokenPartsLen + (p - tokenStart) > MAX_TOKEN_SIZE) {
          // Let the slow path below hit the size limit at the exact byte QEMU does.
          p = pos + Math.max(0, MAX_TOKEN_SIZE - this.tokenPartsLen - (pos - tokenStart));
        }
        pos = p;
        if (pos >= len) break;
      }
      const byte = chunk[pos]!;
      let consumed = false;
      while (!consumed) {
        const next = TABLE[this.state * 256 + byte]!;
        consumed = (next & LOOKAHEAD) === 0;
        const nextState = next & ~LOOKAHEAD;
        if (consumed) pos++;
        if (nextState >= 0x40) {
          // A complete token: its text is everything up to pos.
          const text = this.takeToken(chunk, tokenStart, pos);
          this.processToken((nextState - 0x40 + 100) as TokenType, text);
          tokenStart = pos;
          this.state = S.IN_START;
          if (this.stopRequested) return pos;
        } else if (nextState === S.IN_START) {
          this.dropToken();
          tokenStart = pos;
          this.state = S.IN_START;
        } else if (nextState === S.ERROR) {
          const text = this.takeToken(chunk, tokenStart, pos);
          this.processToken(TokenType.ERROR, text);
          tokenStart = pos;
          this.state = S.IN_RECOVERY;
          if (this.stopRequested) return pos;
        } else if (nextState === S.IN_RECOVERY) {
          tokenStart = pos;
          this.state = S.IN_RECOVERY;
        } else {
          this.state = nextState;
        }
      }
      // json-lexer.c: a single token may not grow beyond MAX_TOKEN_SIZE.
      if (this.tokenPartsLen + (pos - tokenStart) > MAX_TOKEN_SIZE) {
        const text = this.takeToken(chunk, tokenStart, pos);
        this.processToken(this.state as unknown as TokenType, text);
        tokenStart = pos;
        this.state = S.IN_START;
        if (this.stopRequested) return pos;
      }
    }
    if (this.state !== S.IN_START && this.state !== S.IN_RECOVERY && pos > tokenStart) {
      this.tokenParts.push(Buffer.from(chunk.subarray(tokenStart, pos)));
      this.tokenPartsLen += pos - tokenStart;
    }
    return pos;
  }

  /** Forgets any partial message (QEMU re-creates its parser when a client disconnects). */
  reset(): void {
    this.state = S.IN_START;
    this.dropToken();
    this.resetMessage();
  }

  private takeToken(chunk: Buffer, start: number, end: number): Buffer {
    let text: Buffer;
    if (this.tokenParts.length === 0) text = chunk.subarray(start, end);
    else {
      this.tokenParts.push(chunk.subarray(start, end));
      text = Buffer.concat(this.tokenParts);
    }
    this.dropToken();
    return text;
  }

  private dropToken(): void {
    this.tokenParts = [];
    this.tokenPartsLen = 0;
  }

  private resetMessage(): void {
    this.tokens = [];
    this.tokenSize = 0;
    this.braceCount = 0;
    this.bracketCount = 0;
  }

  private fail(error: string): void {
    this.resetMessage();
    this.emit({ error });
  }

  /** json_message_process_token(). */
  private processToken(type: TokenType, text: Buffer): void {
    switch (type) {
      case TokenType.LCURLY: this.braceCount++; break;
      case TokenType.RCURLY: this.braceCount--; break;
      case TokenType.LSQUARE: this.bracketCount++; break;
      case TokenType.RSQUARE: this.bracketCount--; break;
      case TokenType.ERROR:
        this.fail(`JSON parse error, stray '${decodeLenient(text)}'`);
        return;
      default: break;
    }
    if (this.tokenSize + text.length + 1 > MAX_TOKEN_SIZE) {
      this.fail('JSON token size limit exceeded');
      return;
    }
    if (this.tokens.length + 1 > MAX_TOKEN_COUNT) {
      this.fail('JSON token count limit exceeded');
      return;
    }
    if (this.bracketCount + this.braceCount > MAX_NESTING) {
      this.fail('JSON nesting depth limit exceeded');
      return;
    }
    // Tokens are copied: the chunk they came from belongs to the socket.
    this.tokens.push({ type, text: Buffer.from(text) });
    this.tokenSize += text.length;
    if ((this.braceCount > 0 || this.bracketCount > 0) && this.braceCount >= 0 && this.bracketCount >= 0) {
      return;
    }
    const tokens = this.tokens;
    this.resetMessage();
    this.emit(parseTokens(tokens));
  }
}
