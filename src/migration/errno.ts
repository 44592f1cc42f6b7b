/** strerror() texts for the errors a channel meets, so messages read as QEMU's do. */
const STRERROR: Record<string, string> = {
  EPIPE: 'Broken pipe',
  ECONNRESET: 'Connection reset by peer',
  ECONNREFUSED: 'Connection refused',
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  ETIMEDOUT: 'Connection timed out',
  EHOSTUNREACH: 'No route to host',
  ENETUNREACH: 'Network is unreachable',
  ENOTDIR: 'Not a directory',
  EADDRINUSE: 'Address already in use',
  EADDRNOTAVAIL: 'Cannot assign requested address',
  EINVAL: 'Invalid argument',
  EIO: 'Input/output error',
  ENOTSUP: 'Operation not supported',
  ERANGE: 'Numerical result out of range',
  EBADF: 'Bad file descriptor',
  ECANCELED: 'Operation canceled',
  EPERM: 'Operation not permitted',
};

export function strerror(code: string | undefined): string {
  return (code && STRERROR[code]) ?? code ?? 'Unknown error';
}

export function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}
