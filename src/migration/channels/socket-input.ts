/**
 * An accepted socket (or a pipe) read into a few reusable 1 MiB blocks (net.Socket's `onread`)
 * instead of the fresh 64 KiB buffer Node allocates for every read.
 *
 * Why: a destination reads a whole guest's RAM through its main channel. With a fresh buffer per
 * read the process spent most of its time in page faults and GC of those buffers: a 1 GiB pump
 * copying into pre-faulted RAM ran at 591 MiB/s with 1.4 s of system time, against 1698 MiB/s
 * and 0.3 s with reused 1 MiB blocks (measured on the 2-core VM of the README's benchmarks).
 *
 * Chunks come out as 'data' in stream order, each a view of a block; the reader hands each back
 * with recycle() once it has consumed it, and a block whose chunks are all back is reused.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { faults, STALL_POLL_MS, type ChannelEnd, type Cut } from '../../faults/faults.js';
import type { ByteSource } from '../stream/reader.js';

const BLOCK = 1 << 20;
/** A read gets at least this much room; the tail of a fuller block is left unused. */
const MIN_READ = 64 << 10;

interface Block {
  mem: Buffer;
  /** Chunks handed out and not yet recycled. */
  out: number;
  /** Reads have moved on to another block. */
  sealed: boolean;
}

export class SocketInput extends EventEmitter implements ByteSource {
  readonly socket: net.Socket;
  /** Blocks ever allocated: bounded by what the reader holds back, not by the stream's length. */
  blocksAllocated = 0;
  private readonly free: Block[] = [];
  /** The block of each chunk not yet recycled, oldest first. */
  private readonly outstanding: Block[] = [];
  private current: Block;
  private filled = 0;
  /** The channel end the faults know this one as (src/faults), once marked. */
  private faultEnd?: ChannelEnd;
  /** A fault holds the reads (stall, latency, throttle on the receiving side). */
  private held = false;
  private pausedByReader = true;

  /**
   * Takes over `from`: a connection accepted by a server created with pauseOnConnect, or a
   * child's stdout, not yet read from (its handle moves to a new socket that reads into the
   * blocks), or the descriptor of a socket or a pipe (handed over by another thread, or an fd:
   * channel's). `socket` is the one to write to and close; `writable: false` for a pipe's read
   * end, which has no way back (nor a shutdown at its end).
   */
  constructor(from: net.Socket | number, { writable = true }: { writable?: boolean } = {}) {
    super();
    this.current = this.newBlock();
    // The handle is Node's internal one; net.Socket takes a `handle` with `onread` for exactly
    // this (it is how a server socket would get onread, which net.createServer lacks in Node 20).
    const origin = typeof from === 'number' ? { fd: from } : { handle: handleOf(from) };
    this.socket = new net.Socket({
      ...origin,
      pauseOnCreate: true, // until resume(): the reader attaches first
      readable: true,
      writable,
      onread: { buffer: () => this.nextBuffer(), callback: (n: number, buf: Uint8Array) => this.onRead(n, buf) },
    } as unknown as net.SocketConstructorOpts);
    if (typeof from !== 'number') {
      // The old socket lets go of the handle: whoever still holds it (a ChildProcess resumes
      // its stdout as the child exits) must not start reads that would bypass the reader.
      (from as unknown as { _handle: unknown })._handle = null;
      from.removeAllListeners();
    }
    for (const event of ['end', 'close', 'error'] as const) this.socket.on(event, (arg?: unknown) => this.emit(event, arg));
  }

  /**
   * Gives the connection to another thread (new SocketInput(fd) there), before anything was
   * read here. This thread's socket must not be used or closed afterwards: it would close the
   * descriptor under the other thread.
   */
  detach(): number {
    return this.fd!; // canTakeOver() made sure there is one
  }

  /** The connection's descriptor: detach() gives it away; the load thread reads a duplicate while this one is paused. */
  get fd(): number | undefined {
    const fd = (handleOf(this.socket) as { fd?: unknown } | undefined)?.fd;
    return typeof fd === 'number' && fd >= 0 ? fd : undefined;
  }

  /** Whether `accepted` can be taken over (a handle Node exposes as expected). */
  static canTakeOver(accepted: net.Socket): boolean {
    const handle = handleOf(accepted) as { useUserBuffer?: unknown; fd?: unknown } | undefined;
    return typeof handle?.useUserBuffer === 'function' && typeof handle.fd === 'number';
  }

  pause(): this {
    this.pausedByReader = true;
    this.socket.pause();
    return this;
  }

  resume(): this {
    this.pausedByReader = false;
    if (!this.held) this.socket.resume();
    return this;
  }

  isPaused(): boolean {
    return this.socket.isPaused();
  }

  /** The oldest chunk not yet recycled has been consumed. */
  recycle(): void {
    const block = this.outstanding.shift();
    if (block && --block.out === 0 && block.sealed) this.release(block);
  }

  private onRead(n: number, buf: Uint8Array): void {
    this.filled += n;
    this.current.out++;
    this.outstanding.push(this.current);
    const chunk = [Buffer.from(buf.buffer, buf.byteOffset, n)];
    const cut = this.faultEnd && faults.any ? this.sufferFaults(this.faultEnd, chunk) : undefined;
    if (!cut?.breaks) this.emit('data', chunk[0]!);
    else if (cut.bytes > 0) this.emit('data', chunk[0]!.subarray(0, cut.bytes)); // all the reader gets
    cut?.fire();
    if (cut && !cut.breaks) this.hold(this.faultEnd!, 0);
  }

  /**
   * This connection is `end` (a migration's main channel or a multifd one, the receiving side):
   * its faults apply to it (src/faults).
   */
  markFaultable(end: ChannelEnd = { channel: 'main', side: 'receive' }): void {
    this.faultEnd = end;
    faults.channelOpened(end, { close: () => this.socket.destroy(), reset: () => this.socket.resetAndDestroy() });
  }

  /**
   * Applies the faults to a chunk just read: a corrupt flips its byte, a stall or delay holds
   * the next reads. Returns where a fault acts within it: a close, reset or crash breaks the
   * connection there; a fault that starts there holds what comes next (the chunk has been read:
   * its bytes go on).
   */
  private sufferFaults(end: ChannelEnd, chunk: Buffer[]): Cut | undefined {
    const { waitMs, cut } = faults.onChannel(end, chunk);
    if (cut || (waitMs <= 0 && faults.stalled(end) === 0)) return cut;
    this.hold(end, waitMs);
    return undefined;
  }

  /** No reads for `ms`, nor while a stall is in force. */
  private hold(end: ChannelEnd, ms: number): void {
    this.held = true;
    this.socket.pause();
    const release = (): void => {
      if (faults.stalled(end) > 0) return void setTimeout(release, STALL_POLL_MS);
      this.held = false;
      if (!this.pausedByReader) this.socket.resume();
    };
    setTimeout(release, ms);
  }

  /** Where the next read goes: the rest of the current block, or a fresh one. */
  private nextBuffer(): Buffer {
    if (BLOCK - this.filled < MIN_READ) {
      this.current.sealed = true;
      if (this.current.out === 0) this.release(this.current);
      this.current = this.free.pop() ?? this.newBlock();
      this.filled = 0;
    }
    return this.current.mem.subarray(this.filled);
  }

  private newBlock(): Block {
    this.blocksAllocated++;
    return { mem: Buffer.allocUnsafeSlow(BLOCK), out: 0, sealed: false };
  }

  private release(block: Block): void {
    block.sealed = false;
    this.free.push(block);
  }
}

function handleOf(socket: net.Socket): unknown {
  return (socket as unknown as { _handle?: unknown })._handle;
}
