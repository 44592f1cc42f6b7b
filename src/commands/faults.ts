/** qmigd's fault injection over QMP (schema/faults.json; the model is src/faults/faults.ts). */
import type { Daemon } from '../daemon/context.js';
import { faults, type FaultSpec } from '../faults/faults.js';
import type { JsonValue } from '../qmp/json-writer.js';
import { QmpError } from '../errors.js';

export function registerFaults(d: Daemon): void {
  d.registry.register('__org.qmigd_fault-add', (spec: FaultSpec) => {
    if (spec.kind === 'slow-start') throw new QmpError('GenericError', 'A slow-start fault acts as the daemon starts: arm it with --fault or --faults');
    return faults.add(spec) as unknown as JsonValue;
  });
  d.registry.register('__org.qmigd_fault-list', () => faults.list() as unknown as JsonValue);
  d.registry.register('__org.qmigd_fault-clear', (a: { id?: string }) => {
    faults.clear(a.id);
    return {};
  });
}
