/** The JSON streamer in-process: every split point, the limits, and recovery. */
import t from 'tap';
import { JsonMessageParser, MAX_NESTING, type FramingResult } from '../../src/qmp/framing.js';
import { JsonParse, parseMessage } from '../../src/qmp/json-parser.js';
import { toQmpJson } from '../../src/qmp/json-writer.js';

/** A message as the session sees it when its turn comes: parsed, or the streamer's error. */
function shown(r: FramingResult): string {
  if (r.error !== undefined) return `E:${r.error}`;
  const parsed = parseMessage(r.message);
  return 'error' in parsed ? `E:${parsed.error}` : toQmpJson(parsed.value);
}

function collect(chunks: Buffer[]): string[] {
  const out: string[] = [];
  const p = new JsonMessageParser((r: FramingResult) => out.push(shown(r)));
  for (const c of chunks) p.feed(c);
  return out;
}

const INPUT = Buffer.from('{"execute":"a","id":[1,2.5,"x\\u00e9\\ud83d\\ude00"]}{\'b\':\'c\\\'d\'}\n[] "s" {"x":}\xff{"ok":true}', 'latin1');

t.test('every split point gives the same messages', async (t) => {
  const whole = collect([INPUT]);
  t.same(whole, [
    '{"execute": "a", "id": [1, 2.5, "x\\u00E9\\uD83D\\uDE00"]}',
    '{"b": "c\'d"}',
    '[]',
    '"s"',
    'E:JSON parse error, expecting value',
    "E:JSON parse error, stray '\ufffd'", // 0xFF itself is a stray byte, then a resync point
    '{"ok": true}',
  ]);
  for (let i = 1; i < INPUT.length; i++) {
    t.same(collect([INPUT.subarray(0, i), INPUT.subarray(i)]), whole, `split at ${i}`);
  }
  t.same(collect([...INPUT].map((b) => Buffer.from([b]))), whole, 'one byte at a time');
});

t.test('nesting limit: 1024 is fine, 1025 is refused, and the parser recovers', async (t) => {
  const ok = `${'['.repeat(MAX_NESTING)}${']'.repeat(MAX_NESTING)}`;
  t.equal(collect([Buffer.from(ok)]).length, 1);
  t.notMatch(collect([Buffer.from(ok)])[0], /^E:/);
  const deep = `${'['.repeat(MAX_NESTING + 1)}`;
  const out = collect([Buffer.from(`${deep}\n{"a":1}`)]);
  t.equal(out[0], 'E:JSON nesting depth limit exceeded');
  t.equal(out.at(-1), '{"a": 1}', 'a message after the error parses');
});

t.test('token count limit', async (t) => {
  const items = 2 * 1024 * 1024; // each item is two tokens (value and comma)
  const out = collect([Buffer.from(`[${'1,'.repeat(items)}1]\n{"a":1}`)]);
  t.equal(out[0], 'E:JSON token count limit exceeded');
  t.equal(out.at(-1), '{"a": 1}');
});

t.test('token size limit: a 64 MiB string', async (t) => {
  const big = Buffer.alloc(64 * 1024 * 1024 + 10, 0x61);
  const out = collect([Buffer.from('{"execute":"'), big, Buffer.from('"}\n{"a":1}')]);
  t.equal(out[0], 'E:JSON token size limit exceeded');
  t.equal(out.at(-1), '{"a": 1}');
});

t.test('stray bytes and recovery', async (t) => {
  t.same(collect([Buffer.from('@ {"a":1}')]), ["E:JSON parse error, stray '@'", '{"a": 1}']);
  t.same(collect([Buffer.from([0xff, 0x7b, 0x7d])]), ["E:JSON parse error, stray '\ufffd'", '{}']);
  t.same(collect([Buffer.from('"\xc3\x28"\n{}', 'latin1')]), ['E:JSON parse error, invalid UTF-8 sequence in string', '{}']);
});

t.test('a message costs about its bytes while it is read', async (t) => {
  let held = 0;
  const p = new JsonMessageParser(() => undefined);
  const body = Buffer.from('1,'.repeat(1_000_000));
  p.feed(Buffer.from('['));
  p.feed(body);
  held = p.held;
  // Each token's text plus one byte; the buffer grows by doubling.
  t.ok(held >= 2 * body.length && held <= 4 * body.length, `${held} bytes held for ${body.length + 1} bytes of input`);
  p.reset();
  t.ok(p.held <= 64 * 1024, 'a reset gives the big buffer back');
});

t.test('only what a request uses is built; the first error is the same as a full parse', async (t) => {
  const messages: Buffer[] = [];
  const p = new JsonMessageParser((r) => r.message && messages.push(r.message));
  p.feed(Buffer.from('{"execute":"x","big":[1,{"a":"b"},[true]],"id":[1,{"k":null}],"arguments":{"a":[2]}} [1,2,3] {"execute":[1],"arguments":[2]}'));
  const values = messages.map((m) => {
    const r = new JsonParse(m).runToEnd();
    return 'value' in r ? toQmpJson(r.value) : `E:${r.error}`;
  });
  t.same(values, [
    '{"execute": "x", "arguments": {"a": [2]}, "id": [1, {"k": null}], "big": null}',
    'null',
    '{"execute": null, "arguments": null}',
  ]);
  // Values that are only checked still meet every error a full parse meets, first error first.
  const bad = ['{"a":[1 2]}', '[{"a":1,"a":2}]', '{"x":{"y":"\\q"}}', '{"x":[tru]}', '{"x":"\\uD800"}', '{"a":{"b":1,"b":2}}', '[1,]', '{"x":"\xc3\x28"}'];
  for (const text of bad) {
    const got: Buffer[] = [];
    new JsonMessageParser((r) => r.message && got.push(r.message)).feed(Buffer.from(text, 'latin1'));
    const partial = new JsonParse(got[0]!).runToEnd();
    const whole = parseMessage(got[0]!);
    t.ok('error' in partial && 'error' in whole && partial.error === whole.error, `${text}: ${'error' in partial ? partial.error : 'no error'}`);
  }
});
