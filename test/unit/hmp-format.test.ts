/**
 * HMP prints rates with printf("%0.2f"): glibc rounds the exact binary value, an exact tie to
 * even, where Number#toFixed rounds a tie away from zero. The expected strings are glibc's.
 */
import t from 'tap';
import { fixed2 } from '../../src/commands/hmp-migration.js';

t.test('%0.2f as glibc prints it', async (t) => {
  const glibc: Array<[number, string]> = [
    [0.125, '0.12'], [0.375, '0.38'], [0.625, '0.62'], [0.875, '0.88'], [-0.125, '-0.12'], [-0.375, '-0.38'],
    [12345.675, '12345.67'], [2.5, '2.50'], [1.005, '1.00'], [0.001, '0.00'], [-0.001, '-0.00'], [0, '0.00'], [-0, '-0.00'],
    [3341.1543354037267, '3341.15'], [8.5377600000000005, '8.54'], [1e20, '100000000000000000000.00'],
    [4503599627370495.5, '4503599627370495.50'], [1e21, '1000000000000000000000.00'], [-2e22, '-20000000000000000000000.00'], [Infinity, 'inf'], [-Infinity, '-inf'], [NaN, 'nan'],
  ];
  for (const [x, want] of glibc) t.equal(fixed2(x), want, `${x}`);
});

t.test('away from ties, the same as toFixed', async (t) => {
  let seed = 1;
  const next = (): number => ((seed = (seed * 48271) % 2147483647) / 2147483647) * 1e5;
  const differ: string[] = [];
  for (let i = 0; i < 10000; i++) {
    const x = next();
    if (!Number.isInteger(x * 8) && fixed2(x) !== x.toFixed(2)) differ.push(`${x}: ${fixed2(x)}`);
  }
  t.same(differ, []);
});
