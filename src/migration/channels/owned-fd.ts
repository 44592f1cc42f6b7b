/**
 * A descriptor an fd: migration owns: taken from a monitor (getfd's name) or inherited (a
 * number). QEMU closes it when the migration ends, however it ends, and whoever waits at the
 * other end (libvirt does) waits for that close; so the migration's channel is released here
 * when the migration is over. The stream that wraps the descriptor is handed over with adopt(),
 * so that the close goes through it: a second close of the bare number could hit whatever the
 * process opened next under it.
 */
import { closeSync, readFileSync } from 'node:fs';
import net from 'node:net';

type Wrapper = { destroy(): void };

export class OwnedFd {
  private wrapper?: Wrapper;
  private released = false;

  constructor(readonly fd: number) {}

  /** The descriptor's file offset (lseek(fd, 0, SEEK_CUR), which Node has no call for), from /proc. */
  offset(): number {
    return Number(/^pos:\s+(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${this.fd}`, 'utf8'))?.[1] ?? 0);
  }

  /** `wrapper` now owns the descriptor, and closes it when destroyed. */
  adopt<T extends Wrapper>(wrapper: T): T {
    this.wrapper = wrapper;
    return wrapper;
  }

  /**
   * The migration is over. A socket still open sends what it holds and its end first (the
   * destination's SHUT goes before the close), then closes.
   */
  release(): void {
    if (this.released) return;
    this.released = true;
    const w = this.wrapper;
    if (w instanceof net.Socket && !w.destroyed && w.writable) w.end(() => w.destroy());
    else if (w) w.destroy();
    else {
      try {
        closeSync(this.fd);
      } catch {
        /* never opened */
      }
    }
  }
}
