/**
 * The source's side of postcopy (postcopy_start() in migration.c, the discard and page-request
 * parts of ram.c and postcopy-ram.c): what goes on the wire when the migration switches to
 * postcopy, and the queue of pages the destination asks for over the return path, which are
 * sent ahead of the background pass.
 */
import type { DirtyBitmap } from '../../guest/dirty-bitmap.js';
import { decodeRecvBitmap, RAMBLOCK_RECV_BITMAP_ENDING, recvBitmapBytes } from './recv-bitmap.js';
import { PAGE_SIZE } from '../../guest/ram.js';
import { activeProfile } from '../../profiles/index.js';
import { Command, RpMessage, type RecordKind } from '../stream/constants.js';
import { writeCommand, writeDevices } from '../stream/vmstate.js';
import { be32, StreamWriter } from '../stream/writer.js';

/** MAX_DISCARDS_PER_COMMAND (postcopy-ram.c): byte ranges in one POSTCOPY_RAM_DISCARD. */
const MAX_DISCARDS_PER_COMMAND = 12;

/** POSTCOPY_ADVISE with postcopy-ram: the OR of the blocks' page sizes, then the target page size. */
export function postcopyAdvice(): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(BigInt(PAGE_SIZE), 0);
  b.writeBigUInt64BE(BigInt(PAGE_SIZE), 8);
  return b;
}

/**
 * ram_postcopy_send_discard_bitmap(): every run of pages still dirty (never sent, or dirtied
 * since) is stale on the destination, which drops it and waits for it to come again. Each
 * command names the block and carries up to 12 (start, length) byte ranges.
 */
export function discardPayloads(bitmap: DirtyBitmap, blockId: string): Buffer[] {
  const name = Buffer.from(blockId, 'latin1');
  const head = Buffer.concat([Buffer.from([0, name.length]), name, Buffer.from([0])]); // version 0, name, NUL
  const payloads: Buffer[] = [];
  let ranges: Buffer[] = [];
  const flush = (): void => {
    if (ranges.length) payloads.push(Buffer.concat([head, ...ranges]));
    ranges = [];
  };
  for (let start = bitmap.nextSet(0); start >= 0; ) {
    let end = start + 1;
    while (end < bitmap.pages && bitmap.test(end)) end++;
    const range = Buffer.alloc(16);
    range.writeBigUInt64BE(BigInt(start * PAGE_SIZE), 0);
    range.writeBigUInt64BE(BigInt((end - start) * PAGE_SIZE), 8);
    ranges.push(range);
    if (ranges.length === MAX_DISCARDS_PER_COMMAND) flush();
    start = bitmap.nextSet(end);
  }
  flush();
  return payloads;
}

/**
 * The package postcopy_start() sends in one PACKAGED command: LISTEN, the devices' state, PING 3
 * and RUN, so that the destination starts listening before it loads the devices, and runs the
 * guest once they are loaded.
 */
export function packagedState(runState: string, onRecord?: (kind: RecordKind, name: string | undefined, offset: number) => void): Buffer {
  const w = new StreamWriter();
  // Its records are points of the stream too (src/faults), at their offset in the package.
  if (onRecord) w.onRecord = (kind, name) => onRecord(kind, name, w.written);
  writeCommand(w, Command.POSTCOPY_LISTEN);
  writeDevices(w, { cpuTicksOffset: 0n, cpuClockOffset: 0n }, runState);
  writeCommand(w, Command.PING, be32(3));
  writeCommand(w, Command.POSTCOPY_RUN);
  return Buffer.concat(w.take().pieces);
}

/**
 * migrate_handle_rp_req_pages() and ram_save_queue_pages(): the destination's page requests,
 * checked as QEMU checks them (a bad one is an error of the return path), queued in order.
 */
export class PageRequests {
  /** postcopy-requests in query-migrate: every request taken, served or not. */
  count = 0;
  private readonly queue: number[] = [];
  /** The block of the last request that named one (REQ_PAGES names none). */
  private lastBlock?: string;
  /** 1 while a request waits, in shared memory: the page thread ends its slice on it. */
  readonly waitingFlag = new Int32Array(new SharedArrayBuffer(4));

  constructor(private readonly block: { id: string; size: number }) {}

  /** A request for `len` bytes at `start` of `blockId` (undefined: the last one named). Returns an error, or nothing. */
  take(blockId: string | undefined, start: number, len: number): string | undefined {
    const text = activeProfile().errors.reqPages;
    const hex = (n: number): string => n.toString(16);
    if (start % PAGE_SIZE || len % PAGE_SIZE) return text.misaligned(hex(start), len);
    this.count++; // every aligned request, good or not
    if (blockId === undefined) {
      if (this.lastBlock === undefined) return text.noPreviousBlock;
    } else {
      if (blockId !== this.block.id) return text.noBlock(blockId);
      this.lastBlock = blockId;
    }
    // offset_in_ramblock(start + len - 1), in unsigned arithmetic: 0 + 0 - 1 is past the end too.
    const last = start + len - 1;
    if (last < 0 || last >= this.block.size) return text.overrun(hex(start), hex(len), hex(this.block.size));
    for (let page = start / PAGE_SIZE; page < (start + len) / PAGE_SIZE; page++) this.queue.push(page);
    Atomics.store(this.waitingFlag, 0, 1);
    return undefined;
  }

  get waiting(): boolean {
    return this.queue.length > 0;
  }

  /** Every page asked for and not yet taken, oldest first. */
  takeAll(): number[] {
    Atomics.store(this.waitingFlag, 0, 0);
    return this.queue.splice(0);
  }

  /** The oldest page asked for and not yet taken. */
  next(): number | undefined {
    const page = this.queue.shift();
    if (this.queue.length === 0) Atomics.store(this.waitingFlag, 0, 0);
    return page;
  }
}

/** What a postcopy message on the return path comes to for the source. */
export type PostcopyMessage = { error: string } | { requested: true } | { bitmap: DirtyBitmap } | { resumeAck: true } | 'unexpected';

/**
 * source_return_path_thread()'s postcopy messages: a page request (REQ_PAGES names no block and
 * means the last one named), or in a recovery the received bitmap (which follows its message,
 * outside the framing: ramblock_recv_bitmap_reload()) and the resume ack. `take(n)` reads n
 * more bytes of the return path.
 */
export async function readPostcopyMessage(
  type: number,
  payload: Buffer,
  take: (n: number) => Promise<Buffer>,
  block: { id: string; pages: number },
  requests: PageRequests,
): Promise<PostcopyMessage> {
  switch (type) {
    case RpMessage.REQ_PAGES:
    case RpMessage.REQ_PAGES_ID: {
      let name: string | undefined;
      if (type === RpMessage.REQ_PAGES_ID) {
        const expected = payload.length >= 13 ? 13 + payload[12]! : 13;
        if (payload.length !== expected) return { error: `Req_Page_id with length ${payload.length} expecting ${expected}` };
        name = payload.toString('latin1', 13);
      }
      const error = requests.take(name, Number(payload.readBigUInt64BE(0)), payload.readUInt32BE(8));
      return error ? { error } : { requested: true };
    }
    case RpMessage.RECV_BITMAP: {
      const text = activeProfile().errors.recovery;
      const name = payload.toString('latin1', 1, 1 + payload[0]!);
      if (name !== block.id) return { error: text.invalidBlock(name) };
      const expected = recvBitmapBytes(block.pages);
      const size = Number((await take(8)).readBigUInt64BE(0));
      if (size !== expected) return { error: text.sizeMismatch(name, size.toString(16), expected.toString(16)) };
      const words = await take(size);
      const ending = (await take(8)).readBigUInt64BE(0);
      if (ending !== RAMBLOCK_RECV_BITMAP_ENDING) return { error: text.endMark(name, ending.toString(16)) };
      return { bitmap: decodeRecvBitmap(words, block.pages) };
    }
    case RpMessage.RESUME_ACK: {
      const value = payload.readUInt32BE(0);
      return value === 1 ? { resumeAck: true } : { error: activeProfile().errors.recovery.resumeAck(value) };
    }
    default:
      return 'unexpected';
  }
}
