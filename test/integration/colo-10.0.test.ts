/**
 * COLO between two qmigd daemons of the 10.0 profile: colo.test.ts's checkpoints, failovers at
 * every step and errors, with the daemons started as QEMU 10.0. (10.0's own COLO is not run here:
 * it needs block replication and colo-compare; see the README's QEMU releases.)
 */
process.env.QMIGD_TEST_QEMU_VERSION = '10.0';
await import('./colo.test.js');
