/**
 * A failed incoming load: QEMU's error_report() lines (most specific first) and the errno that
 * qemu_loadvm_state() returns, which ends as "load of migration failed: <strerror>".
 */
import { strerror } from './errno.js';

export class LoadError extends Error {
  readonly lines: string[];

  constructor(
    readonly errno: 'EINVAL' | 'EIO' | 'ENOTSUP' | 'ERANGE' | 'EPERM',
    ...lines: string[]
  ) {
    super(lines.length ? lines.join('; ') : strerror(errno));
    this.lines = lines;
  }

  /** The same failure, with an outer line added (as each QEMU layer adds its own report). */
  wrap(line: string): LoadError {
    return new LoadError(this.errno, ...this.lines, line);
  }

  get summary(): string {
    return `load of migration failed: ${strerror(this.errno)}`;
  }
}
