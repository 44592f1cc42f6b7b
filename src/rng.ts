/**
 * The one deterministic PRNG (mulberry32) of qmigd, its tests and benchmarks: the same seed gives
 * the same sequence, so a seeded fault fires at the same chances and a failing case can be
 * replayed from its seed.
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
