/**
 * The same transcripts against a real QEMU 7.2 (-M none) and against qmigd: every reply line,
 * error class and message included, must be the same. Skipped where QEMU is not installed
 * (.ci/run installs it).
 */
import t from 'tap';
import { TRANSCRIPTS } from '../fixtures/transcripts.js';
import { startDaemon } from '../helpers/daemon.js';
import { qemuInstalled, startQemu } from '../helpers/qemu.js';
import { playTranscript } from '../helpers/transcript-runner.js';

/** Lines that may differ: the version strings and timestamps. */
const normalise = (line: string): string =>
  line
    .replace(/"seconds": \d+, "microseconds": \d+/g, '"seconds": S, "microseconds": U')
    .replace(/"micro": \d+/g, '"micro": M')
    .replace(/"package": "[^"]*"/g, '"package": P');

t.test('QEMU 7.2 and qmigd answer the same transcripts identically', { skip: !qemuInstalled() && 'qemu-system-x86_64 is not installed' }, async (t) => {
  for (const transcript of TRANSCRIPTS) {
    const qemu = await startQemu(['-S']);
    const daemon = await startDaemon(['-S']);
    try {
      const fromQemu = await playTranscript(`unix:${qemu.socket}`, transcript);
      const fromQmigd = await playTranscript(daemon.listening[0]!, transcript);
      transcript.steps.forEach((step, i) => {
        if (step.reply === null) return;
        t.same(fromQmigd[i]!.map(normalise), fromQemu[i]!.map(normalise), `${transcript.name}: ${step.send}`);
        // The fixture's expectation is QEMU's answer, not a guess.
        t.same(fromQemu[i], Array.isArray(step.reply) ? step.reply : [step.reply], `fixture matches QEMU: ${step.send}`);
      });
    } finally {
      await qemu.stop();
      await daemon.stop();
    }
  }
});
