/**
 * A file: stream read from a position this source keeps, so that the reader can move it: with
 * mapped-ram QEMU's destination reads the block header, preads the pages the bitmap marks, and
 * then qemu_set_offset()s its stream past the pages region instead of reading through it
 * (parse_ramblock_mapped_ram()). A Readable cannot drop what it has buffered; this emits each
 * chunk as it is read, one at a time, and discards a read in flight at a seek or a pause.
 */
import { EventEmitter } from 'node:events';
import { closeSync, read } from 'node:fs';
import type { ByteSource } from '../stream/reader.js';

const CHUNK = 1 << 20;

export class SeekableFileInput extends EventEmitter implements ByteSource {
  private paused = true;
  private reading = false;
  private finished = false;
  private closed = false;
  private fdClosed = false;
  /** Bumped at each seek: a read started before it is dropped. */
  private generation = 0;

  /** The file position of the next byte to emit. */
  private position: number;

  constructor(
    readonly fd: number,
    /** The file position of the stream's byte 0 (file:...,offset=N). */
    readonly base: number,
  ) {
    super();
    this.position = base;
  }

  /** The next byte emitted is the stream's byte `offset`; nothing read before is emitted. */
  seekTo(offset: number): void {
    if (this.closed) {
      this.emit('close'); // the reader, which thought it could read on, learns it cannot
      return;
    }
    this.generation++;
    this.position = this.base + offset;
    this.finished = false;
    this.pump();
  }

  /**
   * Nothing is emitted until resume(): a read in flight is dropped (its bytes are read again
   * then), so that a reader that hands the file to the load thread gets no chunk meanwhile.
   */
  pause(): this {
    this.paused = true;
    this.generation++;
    return this;
  }

  resume(): this {
    this.paused = false;
    this.pump();
    return this;
  }

  isPaused(): boolean {
    return this.paused;
  }

  /** No more reads; the descriptor is the caller's to close. */
  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.generation++;
    this.emit('close');
  }

  /** destroy(), and the descriptor closed (once): for a caller that gave this source its descriptor. */
  close(): void {
    this.destroy();
    if (!this.fdClosed) closeSync(this.fd);
    this.fdClosed = true;
  }

  private pump(): void {
    if (this.reading || this.paused || this.finished || this.closed) return;
    this.reading = true;
    const generation = this.generation;
    const buf = Buffer.allocUnsafe(CHUNK);
    read(this.fd, buf, 0, CHUNK, this.position, (err, n) => {
      this.reading = false;
      if (generation !== this.generation) return this.pump();
      if (err) {
        this.finished = true;
        this.emit('error', err);
        return;
      }
      if (n === 0) {
        this.finished = true;
        this.emit('end');
        return;
      }
      this.position += n;
      // One chunk ahead at most: the reader resumes this when it wants more. Reading on until
      // its high-water mark would read well into a mapped-ram pages region it then jumps over.
      this.paused = true;
      this.emit('data', buf.subarray(0, n));
    });
  }
}
