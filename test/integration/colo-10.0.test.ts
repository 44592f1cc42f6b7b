/**
 * COLO between two qmigd daemons of the 10.0 profile: colo.test.ts's checkpoints, failovers at
 * every step and errors, with the daemons started as QEMU 10.0. (qmigd against a real QEMU 10.0's
 * COLO: qemu100-colo-interop.test.ts.)
 */
process.env.QMIGD_TEST_QEMU_VERSION = '10.0';
await import('./colo.test.js');
