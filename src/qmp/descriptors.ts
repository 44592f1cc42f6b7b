/**
 * Descriptors that clients pass over unix monitors (SCM_RIGHTS), kept as QEMU 7.2 keeps them
 * (measured against qemu-system-x86_64 7.2; see test/integration/fd-passing.test.ts):
 *
 * - Received (chardev/char-socket.c, tcp_chr_recv and tcp_get_msgfds; one per connection): the
 *   batch that came with the last bytes read that carried any. A new batch closes the previous
 *   one if no command took it; a command that takes a descriptor (getfd, add-fd) takes the
 *   first of the batch and closes the rest; what is left is closed when the client disconnects.
 *   So a descriptor sent with a command that takes none (query-status, closefd) is not closed
 *   with that command: a later getfd without a descriptor takes it, and it is closed only by
 *   the next batch, by a getfd or add-fd, or by the disconnect.
 * - Named (monitor/misc.c, mon->fds; one list per monitor): getfd's names belong to the
 *   monitor, not to the connection. They outlive the client's disconnect, for the monitor's next
 *   client; qmigd's monitors that serve several clients at once share one list.
 *
 * QEMU bounds neither list; qmigd does (MAX_NAMED_FDS per monitor, and 16 received per message,
 * as QEMU's recvmsg takes 16), so that a client cannot run the daemon out of descriptors.
 */
import { closeSync } from 'node:fs';

/** Named descriptors one monitor may hold; a getfd beyond them is refused. */
export const MAX_NAMED_FDS = 64;

export function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* already closed: nothing to release */
  }
}

/** One connection's received batch. */
export class ReceivedFds {
  private batch: number[] = [];

  /** Descriptors that came with bytes now being read: they replace an unclaimed batch. */
  arrive(fds: number[]): void {
    this.batch.forEach(closeFd);
    this.batch = fds;
  }

  /** qemu_chr_fe_get_msgfd(): the batch's first descriptor; the others are closed. */
  take(): number | undefined {
    const [first, ...rest] = this.batch;
    this.batch = [];
    rest.forEach(closeFd);
    return first;
  }

  get count(): number {
    return this.batch.length;
  }

  close(): void {
    this.arrive([]);
  }
}

/** One monitor's named descriptors (getfd, closefd, migrate fd:NAME). */
export class NamedFds {
  private readonly fds = new Map<string, number>();

  constructor(readonly limit = MAX_NAMED_FDS) {}

  get size(): number {
    return this.fds.size;
  }

  /** getfd: names `fd`, closing the descriptor the name had; false if the monitor holds its limit. */
  set(name: string, fd: number): boolean {
    const old = this.fds.get(name);
    if (old === undefined && this.fds.size >= this.limit) return false;
    this.fds.set(name, fd);
    if (old !== undefined) closeFd(old);
    return true;
  }

  /** monitor_get_fd(): the caller takes the descriptor, and the name is gone. */
  take(name: string): number | undefined {
    const fd = this.fds.get(name);
    this.fds.delete(name);
    return fd;
  }

  /** closefd: false if there is no such name. */
  close(name: string): boolean {
    const fd = this.take(name);
    if (fd === undefined) return false;
    closeFd(fd);
    return true;
  }

  closeAll(): void {
    for (const fd of this.fds.values()) closeFd(fd);
    this.fds.clear();
  }
}

/** What a command may do with its monitor's descriptors (CommandContext.fds). */
export interface MonitorFds {
  /** The first descriptor of the batch not yet taken (closing the rest), if any came. */
  takeReceived(): number | undefined;
  readonly named: NamedFds;
}

let current: MonitorFds | undefined;

/**
 * QEMU's monitor_cur(): the monitor whose command is running, for code that reaches a
 * monitor's descriptors without being handed them (migrate fd:NAME). Set for the synchronous
 * part of a handler only, as a coroutine command's monitor is: what a handler looks up after
 * its first await finds no monitor.
 */
export function currentMonitorFds(): MonitorFds | undefined {
  return current;
}

export function runWithMonitor<T>(fds: MonitorFds, run: () => T): T {
  const previous = current;
  current = fds;
  try {
    return run();
  } finally {
    current = previous;
  }
}
