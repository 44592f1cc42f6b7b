/**
 * The source's end of a migration channel: a socket (tcp, unix, or fd: on a socket), a
 * command's stdin (exec), or a pipe or file (fd:). Writes honour back-pressure, and a failed or
 * shut-down channel is remembered as QEMU's QEMUFile error with QEMU's words ("Unable to write
 * to socket: Broken pipe", "Unable to write to file: ..." for QEMU's file channel), which the
 * migration reports as its error-desc. The readable side, when there is one, is the return path.
 */
import { spawn } from 'node:child_process';
import { close, closeSync, constants as fsc, createWriteStream, fstatSync, ftruncateSync, openSync, writev, writevSync } from 'node:fs';
import net from 'node:net';
import { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { faults, type Breakable, type ChannelEnd } from '../../faults/faults.js';
import { throughFaults } from '../../faults/channel-io.js';
import { errnoOf, strerror } from '../../errno.js';
import type { OwnedFd } from './owned-fd.js';
import type { MigrationUri } from './uri.js';

/** Bytes we let the transport hold before waiting for it to drain. */
const IN_FLIGHT = 8 << 20;

/** What a channel writes to, in QEMU's error texts ("Unable to write to socket: ..."). */
export type ChannelKind = 'socket' | 'command' | 'file';

export class OutgoingChannel {
  /** The first error seen; after it nothing more is written. */
  error?: string;
  private closed = false;
  /** The channel end the faults know this one as (src/faults), once marked. */
  private faultEnd?: ChannelEnd;
  /** What the next write meets once the channel is closed: EPIPE, unless closed under us. */
  private closedError: string;
  private waiters: Array<() => void> = [];
  /** Writes handed to the transport, and the last one it is done with (they complete in order). */
  private issued = 0;
  private completed = 0;
  /** The positioned writes of a file: channel, chained in the order they were asked for. */
  private positioned: Promise<void> = Promise.resolve();

  private constructor(
    private readonly out: Writable,
    /** Bytes from the destination (the return path), where the transport has them. */
    readonly input: Readable | undefined,
    private readonly what: ChannelKind,
    private readonly destroy: () => void,
  ) {
    this.closedError = `Unable to write to ${what}: ${strerror('EPIPE')}`;
    out.on('error', (err) => this.fail(`Unable to write to ${what}: ${strerror(errnoOf(err))}`));
    out.on('drain', () => this.wakeAll());
    out.on('close', () => {
      this.closed = true;
      this.wakeAll();
    });
  }

  /** Connects; rejects with QEMU's "Failed to connect to ..." message. */
  static connect(uri: MigrationUri, onStarted: (destroy: () => void) => void): Promise<OutgoingChannel> {
    if (uri.kind === 'exec') {
      // As QEMU: /bin/sh -c COMMAND, the stream on its stdin, its stdout the way back.
      const child = spawn('/bin/sh', ['-c', uri.command], { stdio: ['pipe', 'pipe', 'inherit'] });
      const ch = new OutgoingChannel(child.stdin, child.stdout, 'command', () => {
        child.stdin.destroy();
        child.kill('SIGTERM');
      });
      return Promise.resolve(ch);
    }
    if (uri.kind === 'file') {
      const owned = uri.fd;
      if (!owned) throw new Error('file: is opened by the caller (openOutgoingFile)');
      const out = owned.adopt(new FileAt(owned.fd, uri.offset));
      // A file has no way back: with return-path, 10.0's return path reads the descriptor it
      // opened write-only, fails (EBADF), and the migration fails with that read's error.
      const returnPath = new Readable({
        read() {
          this.destroy(Object.assign(new Error('read of a write-only file'), { code: 'EBADF' }));
        },
      });
      const channel = new OutgoingChannel(out, returnPath, 'file', () => out.destroy());
      return Promise.resolve(channel);
    }
    if (uri.kind === 'fd') {
      const owned = uri.fd;
      if (!owned) throw new Error('fd: is resolved by the caller');
      // From the main loop's next turn, as QEMU's migration thread starts: migrate answers first.
      return new Promise((resolve, reject) => setImmediate(() => {
        try {
          resolve(OutgoingChannel.fromFd(owned));
        } catch (err) {
          reject(err);
        }
      }));
    }
    const where = uri.kind === 'tcp' ? `${uri.host}:${uri.port}` : uri.path;
    return new Promise((resolve, reject) => {
      const socket = uri.kind === 'tcp' ? net.connect(uri.port, uri.host || undefined) : net.connect(uri.path);
      onStarted(() => socket.destroy(new Error('ECANCELED')));
      socket.setNoDelay(true);
      const onError = (err: Error): void => {
        const code = errnoOf(err);
        const reason = code === 'ENOTFOUND' ? 'Name or service not known' : strerror(code ?? err.message);
        reject(new Error(code === 'ENOTFOUND' ? `address resolution failed for ${where}: ${reason}` : `Failed to connect to '${where}': ${reason}`));
      };
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.off('error', onError);
        resolve(new OutgoingChannel(socket, socket, 'socket', () => socket.destroy()));
      });
    });
  }

  /**
   * A second writer of a channel's socket or pipe, for the page thread (ram/page-worker.ts): it
   * writes through its own duplicate `fd` and never reads, ends or shuts the connection down;
   * closing it (destroy) closes only the duplicate.
   */
  static ofDuplicate(fd: number, what: ChannelKind): OutgoingChannel {
    const socket = new net.Socket({ fd, readable: false, writable: true });
    return new OutgoingChannel(socket, undefined, what, () => socket.destroy());
  }

  /**
   * The page thread's end of a file channel, over its own duplicate `fd`: its records go at the
   * position each slice gives (`file.seek()`), mapped-ram's pages at their offsets; closing it
   * closes only the duplicate. Positioned writes block, as the thread may: each run of pages is
   * on the file when writeAt() returns.
   */
  static ofFileDuplicate(fd: number): OutgoingChannel {
    const out = new FileAt(fd, 0, true);
    return new OutgoingChannel(out, undefined, 'file', () => out.destroy());
  }

  /**
   * The descriptor a thread may write through (with its own duplicate) while this channel keeps
   * the way back: a socket or a pipe libuv writes, or a file (`file`: written at positions, a
   * thread's through ofFileDuplicate()).
   */
  get descriptor(): { fd: number; what: ChannelKind; file: boolean } | undefined {
    if (!this.usable) return undefined;
    if (this.out instanceof FileAt) return { fd: this.out.fd, what: 'file', file: true };
    const fd = (this.out as { _handle?: { fd?: number } })._handle?.fd;
    return this.out instanceof net.Socket && typeof fd === 'number' && fd >= 0 ? { fd, what: this.what, file: false } : undefined;
  }

  /**
   * fd: (qio_channel_new_fd()): a socket is a socket channel, with its way back; anything else
   * (a pipe, a file) QEMU's file channel, whose "return path" reads the same descriptor.
   */
  private static fromFd(owned: OwnedFd): OutgoingChannel {
    const stat = fstatSync(owned.fd);
    if (stat.isSocket()) {
      const socket = owned.adopt(new net.Socket({ fd: owned.fd, readable: true, writable: true }));
      socket.setNoDelay(true);
      return new OutgoingChannel(socket, socket, 'socket', () => socket.destroy());
    }
    // Node writes a pipe through libuv; a file at positions from the descriptor's offset on (as
    // QEMU's writes from there: after whatever header the caller wrote), so the page thread can
    // write it too; other descriptors (devices) through fs.
    const out: Writable = owned.adopt(
      stat.isFIFO()
        ? new net.Socket({ fd: owned.fd, readable: false, writable: true })
        : stat.isFile()
          ? new FileAt(owned.fd, owned.offset())
          : createWriteStream('', { fd: owned.fd }),
    );
    // 7.2's return path on a file channel is a second QEMUFile on the same descriptor: its first
    // read fails (a pipe's write end, a file opened for writing), the return path thread closes
    // that QEMUFile and with it the descriptor, and the migration's next write meets EBADF.
    const returnPath = new Readable({
      read() {
        channel.fail(`Unable to write to file: ${strerror('EBADF')}`);
        out.destroy();
        this.push(null);
      },
    });
    const channel = new OutgoingChannel(out, returnPath, 'file', () => out.destroy());
    return channel;
  }

  /**
   * The file a file: channel writes, for what QEMU does at fixed offsets of it (mapped-ram:
   * qemu_put_buffer_at() and qemu_set_offset()); undefined on any other channel.
   */
  get file(): PositionedFile | undefined {
    const out = this.out;
    if (!(out instanceof FileAt)) return undefined;
    return {
      position: () => out.pos,
      seek: (pos) => {
        out.pos = pos;
      },
      writeAt: (pieces, pos) => {
        const failed = (err: unknown): void => this.fail(`Unable to write to file: ${strerror(errnoOf(err))}`);
        if (out.blocking) {
          // The page thread's: a round trip through libuv's pool per run of pages cost more than
          // the writes (4 MiB of half-zero RAM: 13 to 37 ms against 2 to 4 to pick the pages).
          if (!this.usable) return;
          try {
            writeFullySync(out.fd, pieces, pos);
          } catch (err) {
            failed(err);
          }
          return;
        }
        // In order, one at a time, off the event loop: a page rewritten later lands after its
        // earlier copy, and the page loop does not wait for the disk.
        this.positioned = this.positioned.then(async () => {
          if (!this.usable) return;
          await writeFully(out.fd, pieces, pos).catch(failed);
        });
      },
      settled: () => this.positioned,
    };
  }

  get usable(): boolean {
    return !this.error && !this.closed;
  }

  /**
   * The error the next write meets: the first one seen, or EPIPE once the channel is closed.
   * A peer that closes after our last write is no error, as in QEMU, which only learns of a
   * close from a write that fails; a migration with more to send must look here, or it would
   * wait on a channel that will never take another byte.
   */
  get writeError(): string | undefined {
    return this.error ?? (this.closed ? this.closedError : undefined);
  }

  /**
   * Writes the pieces, corked so that they leave in one writev, waiting whenever the transport
   * holds more than IN_FLIGHT; `written` is called once the transport is done with all of them,
   * so their memory can be reused.
   */
  async write(pieces: Buffer[], written?: () => void): Promise<void> {
    const out = this.out;
    if (this.faultEnd && faults.any) {
      const rest = await this.sufferFaults(this.faultEnd, [...pieces]); // a corrupt fault replaces a piece with a flipped copy
      if (!rest) {
        this.error ??= this.writeError;
        return;
      }
      pieces = rest;
    }
    out.cork();
    try {
      for (let i = 0; i < pieces.length; i++) {
        if (!this.usable) {
          this.error = this.writeError;
          return;
        }
        const last = i === pieces.length - 1;
        if (last) this.put(pieces[i]!, written);
        else out.write(pieces[i]!);
        // Keep several chunks in flight: waiting for every one to drain leaves the socket idle
        // while the next is being built.
        if (!last && out.writableLength > IN_FLIGHT) {
          out.uncork();
          await this.whenWritable();
          out.cork();
        }
      }
    } finally {
      out.uncork();
    }
    if (out.writableLength > IN_FLIGHT) await this.whenWritable();
  }

  /**
   * This channel is `end` (a migration's main channel, or a multifd one, the sending side): its
   * faults apply to it (src/faults), and its connection is what close and reset break.
   */
  markFaultable(end: ChannelEnd = { channel: 'main', side: 'send' }): void {
    this.faultEnd = end;
    faults.channelOpened(end, this.breakable);
  }

  /** The connection as close and reset faults break it (the return path's too: it is the same one). */
  get breakable(): Breakable {
    const socket = this.out instanceof net.Socket ? this.out : undefined;
    return {
      close: () => this.out.destroy(),
      reset: () => (socket ? socket.resetAndDestroy() : this.out.destroy()),
    };
  }

  /**
   * The pieces about to go through the faults in force (src/faults/channel-io.ts): what is left
   * to write, or undefined once a fault broke the channel.
   */
  private async sufferFaults(end: ChannelEnd, pieces: Buffer[]): Promise<Buffer[] | undefined> {
    const passBefore = async (before: Buffer[]): Promise<void> => {
      this.put(Buffer.concat(before));
      await this.drained();
    };
    const rest = await throughFaults(end, pieces, passBefore, () => this.usable);
    if (!rest) await sleep(0); // a close or reset takes effect as the socket's close event, a turn later
    return rest;
  }

  /**
   * Resolves once everything written has left our buffers, or the channel is dead. Not on
   * 'drain': a stream emits it only after a write that took it past its high-water mark, and a
   * few bytes queued behind a full socket buffer (the page thread's duplicate descriptor may have
   * filled it) never bring one. Nor with an empty write's callback: on a socket whose peer has
   * read everything and closed, that write itself fails (EPIPE), after a migration that did not.
   */
  async drained(): Promise<void> {
    while (this.usable && this.completed < this.issued) await this.whenWritable();
  }

  /** Writes `piece` and counts it: its callback says the transport is done with it and all before it. */
  private put(piece: Buffer, written?: () => void): void {
    const seq = ++this.issued;
    this.out.write(piece, (err) => {
      this.completed = seq;
      if (!err) written?.();
      if (this.completed === this.issued) this.wakeAll();
    });
  }

  /**
   * The descriptor is closed under the channel (7.2's return-path thread, ending, closes the
   * connection both share): a write still to come fails with EBADF; none to come, no error.
   */
  closeUnder(): void {
    this.closedError = `Unable to write to ${this.what}: ${strerror('EBADF')}`;
    this.destroy();
  }

  /** A read of the way back failed: the error as QEMU's channel words it. */
  readError(err: Error): string {
    return `Unable to read from ${this.what}: ${strerror(errnoOf(err))}`;
  }

  /** qemu_file_shutdown(): blocked I/O fails at once; the error is recorded unless one exists. */
  shutdown(reason = 'Channel was shut down'): void {
    if (!this.error) this.error = reason;
    this.destroy();
    this.wakeAll();
  }

  /** Closes after the last byte went out (end of a successful migration). */
  end(): void {
    this.out.end();
  }

  fail(message: string): void {
    if (!this.error) this.error = message;
    this.wakeAll();
  }

  private whenWritable(): Promise<void> {
    return new Promise((r) => this.waiters.push(r));
  }

  private wakeAll(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

/**
 * file_start_outgoing_migration(): opened (created 0600, not truncated) and cut to `offset`, so
 * that the bytes before the offset stay and the stream replaces whatever followed them; done when
 * `migrate` runs, whose answer is the error when this fails.
 */
export function openOutgoingFile(path: string, offset: number): number {
  let fd: number;
  try {
    fd = openSync(path, fsc.O_CREAT | fsc.O_WRONLY, 0o600);
  } catch (err) {
    throw new Error(`Could not create '${path}': ${strerror(errnoOf(err))}`);
  }
  try {
    ftruncateSync(fd, offset);
  } catch (err) {
    closeSync(fd);
    throw new Error(`failed to truncate migration file to offset ${offset.toString(16)}: ${strerror(errnoOf(err))}`);
  }
  return fd;
}

/** A file: channel's positioned access; `position` and `seek` only once the stream is drained. */
export interface PositionedFile {
  /** Where the stream's next byte goes (qemu_get_offset()). */
  position(): number;
  /** The stream goes on at `pos` (qemu_set_offset(SEEK_SET)). */
  seek(pos: number): void;
  /** `pieces`, one after the other, at `pos`, beside the stream (qemu_put_buffer_at(): pwrite). */
  writeAt(pieces: Uint8Array[], pos: number): void;
  /** Resolves once every writeAt() so far is on the file (or failed: then the channel has the error). */
  settled(): Promise<void>;
}

/**
 * The stream of a file: channel, written at a position it keeps (as fs.WriteStream does, but
 * one that may be moved between writes: mapped-ram's main stream jumps over the pages region).
 */
class FileAt extends Writable {
  constructor(
    readonly fd: number,
    public pos: number,
    /** Positioned writes block (the page thread's duplicate); the stream itself never does. */
    readonly blocking = false,
  ) {
    super({ highWaterMark: 1 << 20 });
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (err?: Error | null) => void): void {
    const bufs = chunks.map((c) => c.chunk);
    writeFully(this.fd, bufs, this.pos).then(() => {
      this.pos += bufs.reduce((n, b) => n + b.length, 0);
      cb();
    }, cb);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this._writev([{ chunk }], cb);
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    close(this.fd, () => cb(err));
  }
}

/** pwritev() until all of `pieces` is written (a short write to a file: the rest again). */
async function writeFully(fd: number, pieces: Uint8Array[], pos: number): Promise<void> {
  for (let left = pieces, at = pos; left.length > 0; ) {
    const n = await new Promise<number>((res, rej) => writev(fd, left, at, (err, written) => (err ? rej(err) : res(written))));
    [left, at] = [unwritten(left, n), at + n];
  }
}

/** writeFully(), blocking: for the page thread. */
function writeFullySync(fd: number, pieces: Uint8Array[], pos: number): void {
  for (let left = pieces, at = pos; left.length > 0; ) {
    const n = writevSync(fd, left, at);
    [left, at] = [unwritten(left, n), at + n];
  }
}

/** What a pwritev() of `n` bytes left of `pieces`; a write of nothing means the disk is full. */
function unwritten(pieces: Uint8Array[], n: number): Uint8Array[] {
  if (n === 0) throw Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' });
  const total = pieces.reduce((sum, b) => sum + b.length, 0);
  return n === total ? [] : [Buffer.concat(pieces).subarray(n)];
}
