/**
 * After a failed `npm test`: every failing assertion of the run, read back from tap's saved
 * results (.tap/test-results), with its file, its subtest path and the start of its diagnostics.
 *
 * Why: the suite prints about 27,000 lines of TAP, and CI keeps only the tail of a run's output,
 * which ends with the count of failures but not their names. This puts the names in that tail.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const RESULTS = '.tap/test-results';
/** Lines of a failure's YAML diagnostics worth printing: the message, found/wanted, the place. */
const DIAGNOSTIC_LINES = 24;

function* tapFiles(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* tapFiles(path);
    else if (name.endsWith('.tap')) yield path;
  }
}

/** The failures of one file's TAP: the subtest path to each failing assertion, and its diagnostics. */
export function failuresIn(tap: string): string[] {
  const lines = tap.split('\n');
  const names: string[] = []; // names[depth]: the subtest open at that indentation
  const found: string[] = [];
  lines.forEach((line, i) => {
    const depth = (line.length - line.trimStart().length) / 4;
    const subtest = /^\s*# Subtest: (.*)$/.exec(line);
    if (subtest) names.splice(depth, Infinity, subtest[1]!);
    const failed = /^\s*not ok \d+ - (.*?)(?: # time=.*)?$/.exec(line);
    // A subtest's own `not ok`, named as its `# Subtest:` line, only repeats that something in it
    // failed: keep the innermost failures.
    if (!failed || names[depth] === failed[1]) return;
    const diagnostics: string[] = [];
    if (lines[i + 1]?.trim() === '---') {
      for (let j = i + 2; j < lines.length && lines[j]!.trim() !== '...' && diagnostics.length < DIAGNOSTIC_LINES; j++) diagnostics.push(lines[j]!);
    }
    found.push([[...names.slice(0, depth), failed[1]].join(' > '), ...diagnostics].join('\n'));
  });
  return found;
}

function main(): void {
  if (!existsSync(RESULTS)) {
    console.log(`\n# tap failed before it saved any result (${RESULTS} is missing): look above for why.`);
    return;
  }
  let count = 0;
  for (const file of tapFiles(RESULTS)) {
    for (const failure of failuresIn(readFileSync(file, 'utf8'))) {
      if (count++ === 0) console.log('\n# The failures of this run:');
      console.log(`\nnot ok: ${relative(RESULTS, file).replace(/\.tap$/, '')}: ${failure}`);
    }
  }
  if (count === 0) console.log('\n# tap failed, but no saved result has a failing assertion: look above for a file that crashed or timed out.');
}

if (import.meta.url === `file://${process.argv[1]}`) main();
