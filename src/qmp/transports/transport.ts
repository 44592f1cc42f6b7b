import type { Logger } from 'pino';
import type { Connection, QmpSession } from '../session.js';

/** What a transport needs from the QMP server. */
export interface TransportHost {
  readonly log: Logger;
  /** A new client: the server greets it and returns the session to feed. */
  accept(conn: Connection): QmpSession;
}

export interface Transport {
  /** Where it listens (or connects), for logs and tests: unix:PATH, tcp:HOST:PORT, ws:HOST:PORT. */
  readonly where: string;
  /** Drops every connected client at once (yank); the listener stays. */
  dropClients(): void;
  close(): Promise<void>;
}
