/**
 * Bytes → JSON messages, exactly as QEMU's qobject/json-lexer.c and json-streamer.c do it.
 *
 * A push parser: feed() takes any chunk of bytes, however a message is split. The lexer is QEMU's
 * state table (same states, same lookahead rule), so a bad token, its recovery (skip to a
 * structural character, a control character or 0xFE/0xFF) and the "stray '%s'" text match
 * QEMU's. The streamer counts brackets and hands a balanced token run on, with QEMU's
 * per-message limits on token text, token count and nesting.
 *
 * What it keeps of a message is the text of its tokens, each followed by one space, in one
 * buffer (json-parser.ts parses that later): a message costs about its own bytes, where one
 * object per token cost a hundred times as much.
 */
import { decodeLenient } from './utf8.js';

export const MAX_TOKEN_SIZE = 64 * 1024 * 1024;
export const MAX_TOKEN_COUNT = 2 * 1024 * 1024;
export const MAX_NESTING = 1024;

const EMPTY = Buffer.alloc(0);

/** A complete message (its tokens' text, for json-parser.ts), or a streamer error. */
export type FramingResult = { message: Buffer; error?: undefined } | { message?: undefined; error: string };

/** Token types, as json-lexer.c numbers them (>= 100; ERROR is 0). */
const enum TokenType {
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
  /** The message so far: its tokens' text, each followed by a space; then the token being lexed. */
  private msg = EMPTY;
  private msgLen = 0;
  /** Where the token being lexed starts in `msg` (its bytes from earlier chunks are there). */
  private tokenAt = 0;
  private tokenCount = 0;
  private tokenSize = 0;
  private braceCount = 0;
  private bracketCount = 0;

  private stopRequested = false;

  constructor(private readonly emit: (result: FramingResult) => void) {}

  /** Bytes held for the message being read (for the monitors' memory budget). */
  get held(): number {
    return this.msg.length;
  }

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
    let pos = 0;
    const len = chunk.length;
    while (pos < len) {
      // Fast path through string bodies: the common bytes just join the token.
      if (this.state === S.IN_DQ_STRING || this.state === S.IN_SQ_STRING) {
        const quote = this.state === S.IN_DQ_STRING ? 0x22 : 0x27;
        let p = pos;
        while (p < len) {
          const b = chunk[p]!;
          if (b === quote || b === 0x5c || b < 0x20 || b > 0xfd) break;
          p++;
        }
        // Let the slow path below hit the size limit at the exact byte QEMU does.
        p = Math.min(p, pos + Math.max(0, MAX_TOKEN_SIZE - (this.msgLen - this.tokenAt)));
        if (p > pos) {
          this.reserve(p - pos);
          chunk.copy(this.msg, this.msgLen, pos, p);
          this.msgLen += p - pos;
          pos = p;
        }
        if (pos >= len) break;
      }
      const byte = chunk[pos]!;
      let consumed = false;
      while (!consumed) {
        const next = TABLE[this.state * 256 + byte]!;
        consumed = (next & LOOKAHEAD) === 0;
        const nextState = next & ~LOOKAHEAD;
        if (consumed) {
          pos++;
          // A token's text is every byte consumed from leaving IN_START to its end.
          if (this.state !== S.IN_RECOVERY && (this.state !== S.IN_START || nextState !== S.IN_START)) {
            if (this.msgLen === this.msg.length) this.reserve(1);
            this.msg[this.msgLen++] = byte;
          }
        }
        if (nextState >= 0x40) {
          this.processToken((nextState - 0x40 + 100) as TokenType);
          this.state = S.IN_START;
          if (this.stopRequested) return pos;
        } else if (nextState === S.ERROR) {
          this.processToken(TokenType.ERROR);
          this.state = S.IN_RECOVERY;
          if (this.stopRequested) return pos;
        } else {
          this.state = nextState;
        }
      }
      // json-lexer.c: a single token may not grow beyond MAX_TOKEN_SIZE.
      if (this.msgLen - this.tokenAt > MAX_TOKEN_SIZE) {
        this.processToken(this.state as unknown as TokenType);
        this.state = S.IN_START;
        if (this.stopRequested) return pos;
      }
    }
    return pos;
  }

  /** Forgets any partial message (QEMU re-creates its parser when a client disconnects). */
  reset(): void {
    this.state = S.IN_START;
    this.resetMessage();
  }

  private reserve(more: number): void {
    const need = this.msgLen + more;
    if (need <= this.msg.length) return;
    const grown = Buffer.allocUnsafeSlow(Math.max(need, 256, this.msg.length * 2));
    this.msg.copy(grown, 0, 0, this.msgLen);
    this.msg = grown;
  }

  private resetMessage(): void {
    // A big buffer goes (the next message starts small); a small one is reused.
    if (this.msg.length > 64 * 1024) this.msg = EMPTY;
    this.msgLen = 0;
    this.tokenAt = 0;
    this.tokenCount = 0;
    this.tokenSize = 0;
    this.braceCount = 0;
    this.bracketCount = 0;
  }

  private fail(error: string): void {
    this.resetMessage();
    this.emit({ error });
  }

  /** json_message_process_token(), for the token at [tokenAt, msgLen) of the message. */
  private processToken(type: TokenType): void {
    const length = this.msgLen - this.tokenAt;
    switch (type) {
      case TokenType.LCURLY: this.braceCount++; break;
      case TokenType.RCURLY: this.braceCount--; break;
      case TokenType.LSQUARE: this.bracketCount++; break;
      case TokenType.RSQUARE: this.bracketCount--; break;
      case TokenType.ERROR:
        this.fail(`JSON parse error, stray '${decodeLenient(this.msg.subarray(this.tokenAt, this.msgLen))}'`);
        return;
      default: break;
    }
    if (this.tokenSize + length + 1 > MAX_TOKEN_SIZE) {
      this.fail('JSON token size limit exceeded');
      return;
    }
    if (this.tokenCount + 1 > MAX_TOKEN_COUNT) {
      this.fail('JSON token count limit exceeded');
      return;
    }
    if (this.bracketCount + this.braceCount > MAX_NESTING) {
      this.fail('JSON nesting depth limit exceeded');
      return;
    }
    this.reserve(1);
    this.msg[this.msgLen++] = 0x20;
    this.tokenAt = this.msgLen;
    this.tokenCount++;
    this.tokenSize += length;
    if ((this.braceCount > 0 || this.bracketCount > 0) && this.braceCount >= 0 && this.bracketCount >= 0) {
      return;
    }
    const message = this.msg.subarray(0, this.msgLen);
    this.msg = EMPTY; // the message owns those bytes now
    this.resetMessage();
    this.emit({ message });
  }
}
