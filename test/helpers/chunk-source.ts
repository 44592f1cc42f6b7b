/**
 * An in-memory ByteSource that hands a stream to a StreamReader cut into given chunks, so a test
 * decides where every chunk boundary falls, and delivered a given number of chunks per turn of
 * the event loop, so it also decides whether the reader has used up what it had before the next
 * chunk arrives: the two states a socket produces, and the ones a reader must not tell apart.
 *
 * Like SocketInput it wants each chunk back (recycle()), and it poisons a chunk as it comes
 * back: a reader that kept reading a chunk after recycling it reads garbage, as it would once a
 * socket reused the memory.
 */
import { EventEmitter } from 'node:events';
import type { ByteSource } from '../../src/migration/stream/reader.js';

const POISON = 0xa5;

export class ChunkSource extends EventEmitter implements ByteSource {
  private paused = false;
  private next = 0;
  private scheduled = false;
  private done = false;
  /** Chunks delivered and not yet recycled, oldest first. */
  private readonly outstanding: Buffer[] = [];

  /**
   * `chunks` in order, then the end; `perTurn()` says how many chunks the next turn delivers
   * (Infinity: all that are left). Delivery starts on the next turn, once the reader listens.
   */
  constructor(
    private readonly chunks: readonly Buffer[],
    private readonly perTurn: () => number,
  ) {
    super();
    this.schedule();
  }

  pause(): this {
    this.paused = true;
    return this;
  }

  resume(): this {
    this.paused = false;
    this.schedule();
    return this;
  }

  isPaused(): boolean {
    return this.paused;
  }

  recycle(): void {
    const chunk = this.outstanding.shift();
    if (!chunk) throw new Error('ChunkSource: recycle() with no chunk outstanding');
    chunk.fill(POISON);
  }

  private schedule(): void {
    if (this.scheduled || this.done) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.deliver();
    });
  }

  private deliver(): void {
    if (this.paused) return; // resume() schedules the rest
    if (this.next === this.chunks.length) {
      // As a Readable: the end comes on a turn of its own, after the last chunk.
      this.done = true;
      this.emit('end');
      this.emit('close');
      return;
    }
    for (let n = this.perTurn(); n > 0 && this.next < this.chunks.length && !this.paused; n--) {
      const chunk = Buffer.from(this.chunks[this.next++]!); // memory of its own, to poison
      this.outstanding.push(chunk);
      this.emit('data', chunk);
    }
    this.schedule();
  }
}
