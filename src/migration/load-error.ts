/**
 * A failed incoming load: QEMU's error_report() lines (most specific first) and the errno that
 * qemu_loadvm_state() returns, which ends as "load of migration failed: <strerror>".
 */
import { strerror } from '../errno.js';

export class LoadError extends Error {
  readonly lines: string[];
  /** Where in the stream the problem was found (bytes from its start). */
  offset?: number;
  /** For a stream that ended too early: its length. */
  streamEnd?: number;
  /** The stream ended under the reader (StreamEnded), whatever QEMU's errno says of it. */
  early = false;

  constructor(
    readonly errno: 'EINVAL' | 'EIO' | 'ENOTSUP' | 'ERANGE' | 'EPERM',
    ...lines: string[]
  ) {
    super(lines.length ? lines.join('; ') : strerror(errno));
    this.lines = lines;
  }

  /** The failure of a stream that ended too early. */
  static endedEarly(errno: LoadError['errno'], ...lines: string[]): LoadError {
    const err = new LoadError(errno, ...lines);
    err.early = true;
    return err;
  }

  /** The same failure, with an outer line added (as each QEMU layer adds its own report). */
  wrap(line: string): LoadError {
    const outer = new LoadError(this.errno, ...this.lines, line);
    outer.early = this.early;
    return outer;
  }

  get summary(): string {
    return `load of migration failed: ${strerror(this.errno)}`;
  }

  /** One line naming what was wrong and where: qmigd's addition to QEMU's reports. */
  get located(): string {
    const at = (n: number): string => `byte offset ${n} (0x${n.toString(16)})`;
    const where = this.offset === undefined ? 'at an unknown offset' : `at ${at(this.offset)}`;
    const what = this.lines[0] ?? strerror(this.errno);
    if (this.streamEnd !== undefined) return `invalid migration stream: it ends early, at ${at(this.streamEnd)}, in an item that began ${where} (${what})`;
    return `invalid migration stream ${where}: ${what}`;
  }
}
