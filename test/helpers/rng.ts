/** The tests' deterministic PRNG is qmigd's own (src/rng.ts), and a draw from it. */
export { rng } from '../../src/rng.js';

/** An integer in [0, n), drawn from `r`. */
export function below(r: () => number, n: number): number {
  return Math.floor(r() * n);
}
