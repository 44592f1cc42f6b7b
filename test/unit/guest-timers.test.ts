/**
 * An idle daemon sleeps: the guest's workload ticks only while it has a rate to write at, and
 * its network output only while COLO's compare listens. (Both ticked always before, 150 wake-ups
 * a second: about 4 % of a core for a daemon doing nothing, in every daemon on a host.)
 */
import t from 'tap';
import { GuestRam } from '../../src/guest/ram.js';
import { Workload } from '../../src/guest/workload.js';
import { GuestOutput } from '../../src/guest/output.js';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

/** The intervals set and not yet cleared from now on, counted through the globals. */
function liveIntervals(t: Tap): { live: () => number } {
  const live = new Set<unknown>();
  const [set, clear] = [globalThis.setInterval, globalThis.clearInterval];
  globalThis.setInterval = ((...args: Parameters<typeof setInterval>) => {
    const timer = set(...args);
    live.add(timer);
    return timer;
  }) as typeof setInterval;
  globalThis.clearInterval = ((timer: NodeJS.Timeout) => {
    live.delete(timer);
    clear(timer);
  }) as typeof clearInterval;
  t.teardown(() => {
    globalThis.setInterval = set;
    globalThis.clearInterval = clear;
    for (const timer of live) clear(timer as NodeJS.Timeout);
  });
  return { live: () => live.size };
}

t.test('the workload ticks only while it has a rate', async (t) => {
  const timers = liveIntervals(t);
  const workload = new Workload(new GuestRam('pc.ram', 1 << 20), () => true);
  t.equal(timers.live(), 0, 'none at rate 0');
  workload.set(1 << 20);
  t.equal(timers.live(), 1, 'one once a rate is set');
  workload.set(2 << 20, { kind: 'sequential' });
  t.equal(timers.live(), 1, 'still one when it changes');
  await new Promise((r) => setTimeout(r, 50));
  t.ok(workload.pagesDirtied > 0, `it writes (${workload.pagesDirtied} pages)`);
  workload.set(0);
  t.equal(timers.live(), 0, 'none once the rate is 0 again');
  const written = workload.pagesDirtied;
  await new Promise((r) => setTimeout(r, 30));
  t.equal(workload.pagesDirtied, written, 'and nothing more is written');
});

t.test("the guest's output ticks only while someone listens", async (t) => {
  const timers = liveIntervals(t);
  const output = new GuestOutput(() => true);
  t.equal(timers.live(), 0, 'none without a listener');
  const seen: number[] = [];
  const offA = output.onPacket((p) => seen.push(p.seq));
  const offB = output.onPacket(() => undefined);
  t.equal(timers.live(), 1, 'one for any number of listeners');
  await new Promise((r) => setTimeout(r, 70));
  t.ok(seen.length > 0, `packets come (${seen.length})`);
  offA();
  t.equal(timers.live(), 1, 'one while a listener is left');
  offB();
  t.equal(timers.live(), 0, 'none once the last has gone');
});
