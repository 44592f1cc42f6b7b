/** pmemsave (QAPI module "machine") and qmigd's downstream guest commands: the workload and the RAM digest. */
import { open } from 'node:fs/promises';
import type { Daemon } from '../daemon/context.js';
import { Errors } from '../errors.js';
import { formatWorkloadPattern, parseWorkloadPattern, type WorkloadPattern } from '../guest/workload.js';
import { strerror } from '../errno.js';
import type { JsonValue } from '../qmp/json-writer.js';

/** pmemsave writes in pieces this big, letting the event loop run between them. */
const PIECE = 4 << 20;

export function registerGuest(d: Daemon): void {
  const { ram, workload } = d.guest;

  // qmp_pmemsave(): guest-physical [val, val+size) to a file; the RAM block sits at GPA 0 and
  // reads beyond it return zeros, as unassigned memory does.
  d.registry.register('pmemsave', async (a: { val: number; size: number; filename: string }) => {
    if (a.size < 0) throw Errors.invalidParameter('size');
    let file;
    try {
      file = await open(a.filename, 'w');
    } catch (err) {
      throw Errors.fileOpen(a.filename, strerror((err as NodeJS.ErrnoException).code));
    }
    try {
      for (let done = 0; done < a.size; done += PIECE) {
        const piece = Buffer.allocUnsafe(Math.min(PIECE, a.size - done));
        ram.read(a.val + done, piece);
        await file.write(piece);
      }
    } catch {
      throw Errors.ioError();
    } finally {
      await file.close();
    }
    return {};
  });

  d.registry.register('__org.qmigd_set-workload', (a: { rate: number; pattern?: string; journal?: boolean }) => {
    if (!(a.rate >= 0 && a.rate <= Number.MAX_SAFE_INTEGER)) throw Errors.parameterValue('rate', 'bytes per second, from 0 to 2^53');
    let pattern: WorkloadPattern | undefined;
    if (a.pattern !== undefined) {
      try {
        pattern = parseWorkloadPattern(a.pattern);
      } catch {
        throw Errors.parameterValue('pattern', "'uniform', 'sequential' or 'hot:PERCENT' with PERCENT from 1 to 100");
      }
    }
    workload.set(a.rate, pattern);
    if (a.journal !== undefined) workload.journal = a.journal ? { entries: [], overflow: false } : undefined;
    return {};
  });

  d.registry.register('__org.qmigd_query-workload-journal', () => ({
    writes: (workload.journal?.entries ?? []) as unknown as JsonValue,
    overflow: workload.journal?.overflow ?? false,
  }));

  d.registry.register('__org.qmigd_query-workload', () => ({
    rate: workload.rate,
    pattern: formatWorkloadPattern(workload.pattern),
    running: workload.active,
    'throttle-percentage': workload.throttlePercent,
    'pages-dirtied': workload.pagesDirtied,
    'page-faults': workload.pageFaults,
    stalled: workload.stalled,
  }));

  d.registry.register('__org.qmigd_set-guest-output', (a: { diverge: boolean }) => {
    d.guest.output.diverge = a.diverge;
    return {};
  });

  d.registry.register('__org.qmigd_query-ram-digest', async () => ({ sha256: await ram.sha256(), size: ram.size }));
}
