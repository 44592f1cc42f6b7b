/**
 * Every QMP rule of the foundation issue as a transcript against the built daemon over a real
 * Unix socket: exact reply lines, each message whole and again split into single bytes; and the
 * transcripts of every later release against a daemon started as it (whole messages: the
 * splitting is the release-independent framing).
 */
import t from 'tap';
import { PROFILES } from '../../src/profiles/index.js';
import { transcriptsFor } from '../fixtures/transcripts.js';
import { startDaemon } from '../helpers/daemon.js';
import { playTranscript } from '../helpers/transcript-runner.js';

for (const { id: release } of PROFILES) {
  for (const chunking of release === '7.2' ? (['whole', 'bytes'] as const) : (['whole'] as const)) {
    for (const transcript of transcriptsFor(release)) {
      t.test(`${release}: ${transcript.name} (${chunking})`, async (t) => {
        const d = await startDaemon(['-S', '--qemu-version', release]);
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
}
