/**
 * 20,000 random and mutated inputs against the running daemon. After each, the client
 * resynchronises as the QMP spec suggests (0xFF then a newline) and a well-formed command must
 * be answered: the daemon never exits and the connection keeps working.
 *
 * `npm run fuzz` runs FUZZ_CASES inputs (say 100,000) from a random seed; see
 * ../helpers/fuzz-env.ts. CI's seed 0 gives the cases this test always ran.
 */
import t from 'tap';
import { startDaemon } from '../helpers/daemon.js';
import { fuzzPlan } from '../helpers/fuzz-env.js';
import { QmpClient } from '../helpers/qmp-client.js';
import { rng } from '../helpers/rng.js';

const SEEDS = [
  '{"execute":"query-status","id":1}',
  '{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}',
  '{"execute":"human-monitor-command","arguments":{"command-line":"info status"},"id":"x"}',
  '{"exec-oob":"query-yank","id":[1,{"a":null}]}',
  '{"execute":"query-version","arguments":{},"id":1.5e3}',
  "{'execute':'query-name','id':'\\u00e9\\'q'}",
  '[{"a":[true,false,null,-0.5e-3]}]',
];
const ALPHABET = Buffer.from('{}[]:,"\'\\ \t\n\r0123456789-+.eEtrufalsn@xu\x00\x01\x7f\xc3\xa9\xfe\xff');

const FUZZ = fuzzPlan('qmp-fuzz', 20000, 0);

function makeCase(n: number): Buffer {
  const r = rng((FUZZ.seed + n + 1) >>> 0);
  const pick = (len: number): number => Math.floor(r() * len);
  if (n % 3 === 0) {
    return Buffer.from(Array.from({ length: 1 + pick(60) }, () => ALPHABET[pick(ALPHABET.length)]!));
  }
  const bytes = [...Buffer.from(SEEDS[pick(SEEDS.length)]!, 'utf8')];
  for (let m = 1 + pick(4); m > 0; m--) {
    const at = pick(bytes.length + 1);
    const kind = pick(4);
    if (kind === 0) bytes.splice(at, 1);
    else if (kind === 1) bytes.splice(at, 0, ALPHABET[pick(ALPHABET.length)]!);
    else if (kind === 2) bytes[at % bytes.length] = pick(256);
    else bytes.splice(at, pick(8)); // truncate a run
  }
  if (n % 7 === 0) return Buffer.from(`${'['.repeat(1000 + pick(100))}${Buffer.from(bytes).toString('latin1')}`, 'latin1');
  return Buffer.from(bytes);
}

const CASES = FUZZ.cases;
const CONNECTIONS = 4;

t.test(`${CASES} fuzz inputs; a good command is answered after each`, async (t) => {
  const d = await startDaemon();
  t.teardown(() => d.stop());
  let answered = 0;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async (_, conn) => {
      const c = await QmpClient.at(d.listening[0]!);
      await c.negotiate();
      for (let n = conn; n < CASES; n += CONNECTIONS) {
        const from = c.lines.length;
        c.send(Buffer.concat([makeCase(n), Buffer.from([0xff]), Buffer.from(`\n{"execute":"query-name","id":"probe-${n}"}`)]));
        for (let i = from; ; i++) {
          await c.waitLines(i + 1);
          if (c.lines[i]!.includes(`"probe-${n}"`)) {
            t.equal(c.lines[i], `{"return": {}, "id": "probe-${n}"}`, `case ${n} (${FUZZ.replay})`, { diagnostic: false });
            answered++;
            break;
          }
        }
      }
      c.close();
    }),
  );
  t.equal(answered, CASES);
  t.equal(d.proc.exitCode, null, 'daemon never exited');
});
