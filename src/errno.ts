import { existsSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * The operating system's side of the error catalog (src/errors.ts has QMP's): strerror() texts
 * for the errors a socket or file meets, in a migration channel or a monitor, so that messages
 * read as QEMU's do.
 */
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

/**
 * What QEMU says when a socket cannot listen (a migration's, a monitor's): unix_listen_saddr()
 * reports its bind(), inet_listen_saddr() the port it could not find. libuv reports a unix path
 * in a missing directory as EACCES (uv_pipe_bind() maps ENOENT so, for Windows' sake), where
 * QEMU's bind() says ENOENT.
 */
export function listenFailure(err: unknown, at: { unix: string } | { tcp: true }): string {
  let code = errnoOf(err);
  if ('unix' in at) {
    if (code === 'EACCES' && !existsSync(dirname(at.unix))) code = 'ENOENT';
    return `Failed to bind socket to ${at.unix}: ${strerror(code)}`;
  }
  return `Failed to find an available port: ${strerror(code)}`;
}
