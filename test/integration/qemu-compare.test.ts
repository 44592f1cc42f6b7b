/**
 * The same transcripts against each real QEMU release qmigd can be (-M none) and against qmigd
 * started as that release (--qemu-version): every reply line, error class and message included,
 * must be the same. A release's fixture expectations are its own (test/fixtures/transcripts.ts).
 * Skipped for a release whose QEMU is not installed (.ci/run installs both).
 */
import t from 'tap';
import { PROFILES } from '../../src/profiles/index.js';
import { transcriptsFor } from '../fixtures/transcripts.js';
import { startDaemon } from '../helpers/daemon.js';
import { qemuSkip, startQemu } from '../helpers/qemu.js';
import { playTranscript } from '../helpers/transcript-runner.js';

/** Lines that may differ: the version strings and timestamps. */
const normalise = (line: string): string =>
  line
    .replace(/"seconds": \d+, "microseconds": \d+/g, '"seconds": S, "microseconds": U')
    .replace(/"micro": \d+/g, '"micro": M')
    .replace(/"package": "[^"]*"/g, '"package": P');

for (const { id: release } of PROFILES) {
  t.test(`QEMU ${release} and qmigd --qemu-version ${release} answer the same transcripts identically`, { skip: qemuSkip(release) }, async (t) => {
    for (const transcript of transcriptsFor(release)) {
      const qemu = await startQemu(['-S'], { release });
      const daemon = await startDaemon(['-S', '--qemu-version', release]);
      try {
        const fromQemu = await playTranscript(`unix:${qemu.socket}`, transcript);
        const fromQmigd = await playTranscript(daemon.listening[0]!, transcript);
        transcript.steps.forEach((step, i) => {
          if (step.reply === null) return;
          t.same(fromQmigd[i]!.map(normalise), fromQemu[i]!.map(normalise), `${transcript.name}: ${step.send}`);
          // The fixture's expectation is this QEMU's answer, not a guess.
          t.same(fromQemu[i], Array.isArray(step.reply) ? step.reply : [step.reply], `fixture matches QEMU ${release}: ${step.send}`);
        });
      } finally {
        await qemu.stop();
        await daemon.stop();
      }
    }
  });
}
