/**
 * Postcopy in qmigd so far (issue 16, first part): a destination takes a postcopy stream
 * (test/integration/qemu-postcopy-interop.test.ts, from a real QEMU); as a source qmigd does not
 * run postcopy yet, and says so at `migrate` rather than migrating without it.
 */
import t from 'tap';
import { freePort } from '../helpers/daemon.js';
import { runState, setCaps, side } from '../helpers/migration.js';

t.test('a qmigd source with postcopy-ram refuses to migrate, in QMP\'s form; the guest runs on', async (t) => {
  const s = await side(['-m', '16M']);
  t.teardown(() => s.daemon.stop());
  await setCaps(s, { 'postcopy-ram': true });
  t.same(await s.qmp.cmd('migrate', { uri: `tcp:127.0.0.1:${await freePort()}` }), {
    error: { class: 'GenericError', desc: "Migration capability 'postcopy-ram' is not implemented by qmigd as a source" },
  });
  t.same(await s.qmp.ok('query-migrate'), {}, 'no migration was started');
  t.equal(await runState(s), 'running');
  await setCaps(s, { 'postcopy-ram': false });
  t.match(await s.qmp.cmd('migrate-start-postcopy'), { error: { class: 'GenericError' } }, 'and migrate-start-postcopy without it is refused as QEMU refuses it');
});
