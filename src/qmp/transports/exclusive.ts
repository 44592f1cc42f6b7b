/**
 * One client at a time on a monitor, as QEMU serves one (`exclusive=on`). QEMU accept()s a
 * monitor's next connection only once the current one has gone, so a client that connects
 * meanwhile sits in the kernel's accept queue: its connect() succeeds, it gets no greeting and
 * nothing it sends is read; the moment the current client leaves, it is accepted, greeted, and
 * what it had sent is answered in order. QEMU listens with a backlog of 1, which Linux lets hold
 * two connections; a third is refused by the kernel (EAGAIN on a unix socket, a SYN that times
 * out on TCP).
 *
 * Node accepts every connection itself, so the transports keep the waiting ones here, un-greeted
 * and with no session (no command of theirs can run), and start the oldest when the monitor is
 * free. A connection beyond the two that may wait cannot be refused as QEMU's kernel refuses it
 * (it is already accepted): it is closed at once instead.
 */

/** How many clients may wait behind the current one: what QEMU's listen backlog of 1 holds. */
export const MAX_WAITING = 2;

/**
 * Bytes a waiting client may send before the transport stops reading it. The transports read
 * waiting clients (without handing anything to a session) only to notice one that goes away; a
 * client that sends more than this waits unread, as in QEMU, until its turn.
 */
export const MAX_HELD_BYTES = 64 * 1024;

/** A connection's part in the queue. */
export interface Turn {
  /** Its turn has come: greet it and serve it. */
  start(): void;
  /** No room to wait: close it. */
  refuse(): void;
}

export class ExclusiveQueue {
  private active?: Turn;
  private readonly waiting: Turn[] = [];

  /** A new connection: started now if the monitor is free, else queued, else refused. */
  arrive(turn: Turn): 'started' | 'waiting' | 'refused' {
    if (!this.active) {
      this.active = turn;
      turn.start();
      return 'started';
    }
    if (this.waiting.length < MAX_WAITING) {
      this.waiting.push(turn);
      return 'waiting';
    }
    turn.refuse();
    return 'refused';
  }

  /** A connection went, served or still waiting: a waiting one leaves the queue; a served one makes room for the next. */
  leave(turn: Turn): void {
    if (this.active !== turn) {
      const i = this.waiting.indexOf(turn);
      if (i >= 0) this.waiting.splice(i, 1);
      return;
    }
    this.active = this.waiting.shift();
    this.active?.start();
  }
}
