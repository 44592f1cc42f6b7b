/**
 * The one deterministic PRNG of the tests and benchmarks (mulberry32): the same seed gives the
 * same sequence, so a failing case can be replayed from its seed.
 */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in [0, n), drawn from `r`. */
export function below(r: () => number, n: number): number {
  return Math.floor(r() * n);
}
