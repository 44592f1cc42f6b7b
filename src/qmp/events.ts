/**
 * Event fan-out: `{"event", "data", "timestamp"}` to every monitor that has finished
 * capabilities negotiation (QEMU drops events for the others). `data` is omitted for events
 * without members, as QEMU does.
 */
import { faults } from '../faults/faults.js';
import type { JsonValue } from './json-writer.js';
import { forValidation } from './dispatcher.js';
import type { SchemaSet } from './schema.js';

export interface EventSink {
  readonly negotiated: boolean;
  sendEvent(message: { [key: string]: JsonValue }): void;
}

export class EventBus {
  private readonly sinks = new Set<EventSink>();
  private readonly listeners = new Set<(name: string, data: { [key: string]: JsonValue } | undefined) => void>();

  constructor(
    private readonly schemas: SchemaSet,
    private readonly validate: boolean,
  ) {}

  attach(sink: EventSink): void {
    this.sinks.add(sink);
  }

  detach(sink: EventSink): void {
    this.sinks.delete(sink);
  }

  /** In-process observers (the demo, the logger), told of every event. */
  onEvent(listener: (name: string, data: { [key: string]: JsonValue } | undefined) => void): void {
    this.listeners.add(listener);
  }

  emit(name: string, data?: { [key: string]: JsonValue }): void {
    const schema = this.schemas.events.get(name);
    if (!schema) throw new Error(`event ${name} has no schema in schema/`);
    if (this.validate && !schema.validateData(forValidation(data ?? {}))) {
      throw new Error(`qmigd bug: event ${name} does not match its schema: ${this.schemas.describeErrors(schema.validateData)}`);
    }
    const micros = Math.floor((performance.timeOrigin + performance.now()) * 1000);
    const message: { [key: string]: JsonValue } = {
      event: name,
      timestamp: { seconds: Math.floor(micros / 1e6), microseconds: micros % 1e6 },
    };
    if (data && Object.keys(data).length > 0) message.data = data;
    const send = (): void => {
      for (const sink of this.sinks) if (sink.negotiated) sink.sendEvent(message);
      for (const l of this.listeners) l(name, data);
    };
    if (faults.any) faults.onEvent(name, send);
    else send();
  }
}
