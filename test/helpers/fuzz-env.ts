/**
 * How many cases a fuzz test runs, and from which seed. CI runs each test's own count from its
 * fixed seed; `npm run fuzz` sets FUZZ_CASES for a much longer run, which then starts from a
 * random seed (unless FUZZ_SEED names one), printed so that a failure can be replayed:
 *
 *   FUZZ_SEED=<seed> FUZZ_CASES=<n> npx tap dist/test/...        the same run again
 *   FUZZ_SEED=<seed> FUZZ_CASE=<i> npx tap dist/test/...         case i of it alone
 */
export interface FuzzPlan {
  cases: number;
  seed: number;
  /** FUZZ_CASE: the one case to run, when replaying. */
  only?: number;
  /** How to run these cases again. */
  replay: string;
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${v}: expected a non-negative integer`);
  return n;
}

/** `oneCase`: the test can run case FUZZ_CASE alone (its cases do not depend on each other). */
export function fuzzPlan(test: string, ciCases: number, ciSeed: number, oneCase = false): FuzzPlan {
  const fuzzing = envInt('FUZZ_CASES');
  const cases = fuzzing ?? ciCases;
  const seed = envInt('FUZZ_SEED') ?? (fuzzing === undefined ? ciSeed : Math.floor(Math.random() * 2 ** 32));
  const only = oneCase ? envInt('FUZZ_CASE') : undefined;
  const replay = `FUZZ_SEED=${seed} FUZZ_CASES=${cases}`;
  // Printed whenever the seed is not CI's, on stderr, which the tap reporter shows at once:
  // a long run's seed is known before it ends (or hangs).
  if (fuzzing !== undefined || envInt('FUZZ_SEED') !== undefined) process.stderr.write(`${test}: ${only === undefined ? `${cases} cases` : `case ${only}`} from seed ${seed} (replay: ${replay})\n`);
  return { cases, seed, only, replay };
}

/** Case i's own seed, so one case can be replayed without the ones before it. */
export function caseSeed(seed: number, i: number): number {
  return (Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(i + 1, 0x85ebca6b)) >>> 0;
}
