import t from 'tap';
import { failuresIn } from '../report-failures.js';

// TAP as tap 21 writes it to .tap/test-results: a failing assertion two subtests deep, the
// subtests' own `not ok` lines that repeat it, and a passing neighbour.
const NESTED = [
  '# Subtest: outer',
  '    ok 1 - fine',
  '    # Subtest: inner',
  '        not ok 1 - one is two',
  '          ---',
  '          compare: ===',
  '          found: 1',
  '          wanted: 2',
  '          ...',
  '        ',
  '        1..1',
  '    not ok 2 - inner # time=35.541ms',
  '      ---',
  '      at:',
  '      ...',
  '    ',
  '    1..2',
  'not ok 1 - outer # time=40.1ms',
  '# Subtest: neighbour',
  '    ok 1 - fine',
  '    1..1',
  'ok 2 - neighbour # time=1ms',
  '1..2',
].join('\n');

t.test('the innermost failure, with its subtest path and diagnostics', async (t) => {
  t.same(failuresIn(NESTED), ['outer > inner > one is two\n          compare: ===\n          found: 1\n          wanted: 2']);
});

t.test('a subtest that timed out is named by its timeout assertion', async (t) => {
  const timedOut = ['# Subtest: slow', '    not ok 1 - timeout!', '    1..1', 'not ok 1 - slow # time=300000ms', '1..1'].join('\n');
  t.same(failuresIn(timedOut), ['slow > timeout!']);
});

t.test('a run that passed has none', async (t) => {
  t.same(failuresIn(NESTED.replace(/not ok/g, 'ok')), []);
});
