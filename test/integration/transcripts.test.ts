/**
 * Every QMP rule of the foundation issue as a transcript against the built daemon over a real
 * Unix socket: exact reply lines, each message whole and again split into single bytes.
 */
import t from 'tap';
import { TRANSCRIPTS } from '../fixtures/transcripts.js';
import { startDaemon } from '../helpers/daemon.js';
import { playTranscript } from '../helpers/transcript-runner.js';

for (const chunking of ['whole', 'bytes'] as const) {
  for (const transcript of TRANSCRIPTS) {
    t.test(`${transcript.name} (${chunking})`, async (t) => {
      const d = await startDaemon(['-S']);
      t.teardown(() => d.stop());
      const got = await playTranscript(d.listening[0]!, transcript, chunking);
      transcript.steps.forEach((step, i) => {
        if (step.reply === null) return;
        t.same(got[i], Array.isArray(step.reply) ? step.reply : [step.reply], step.send);
      });
      t.equal(d.proc.exitCode, null, 'daemon still running');
    });
  }
}
