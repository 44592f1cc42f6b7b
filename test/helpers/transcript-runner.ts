import type { Transcript } from '../fixtures/transcripts.js';
import { QmpClient } from './qmp-client.js';

/** Plays a transcript over a fresh connection; returns the reply lines each step produced. */
export async function playTranscript(where: string, t: Transcript, chunking: 'whole' | 'bytes' = 'whole'): Promise<string[][]> {
  const client = await QmpClient.at(where);
  try {
    if (t.negotiate !== false) await client.negotiate(t.negotiate);
    const out: string[][] = [];
    for (const step of t.steps) {
      const want = Array.isArray(step.reply) ? step.reply.length : 1;
      const from = client.lines.length;
      const bytes = Buffer.from(step.send, 'utf8');
      if (chunking === 'bytes') {
        for (const b of bytes) {
          client.send(Buffer.from([b]));
          await new Promise((r) => setImmediate(r));
        }
      } else client.send(bytes);
      const replies: string[] = [];
      let i = from;
      while (replies.length < want) {
        const line = await client.nextReply(i);
        i = client.lines.indexOf(line, i) + 1;
        replies.push(line);
      }
      out.push(replies);
    }
    return out;
  } finally {
    client.close();
  }
}
