/**
 * The destination's side of postcopy (savevm.c's loadvm_postcopy_handle_*, postcopy-ram.c): the
 * commands of a postcopy stream in the states QEMU takes them in. A source advises postcopy,
 * discards the pages it will send again, and sends the device state in a package that opens
 * with LISTEN and ends with RUN; from RUN on the guest runs here while the rest of RAM comes.
 * A page the guest touches before it came is asked for on the return path (its vCPU waits);
 * the received bitmap says which are here, and is what a recovery after a pause sends back.
 */
import { DirtyBitmap } from '../../guest/dirty-bitmap.js';
import { PAGE_SIZE } from '../../guest/ram.js';
import type { PageGate } from '../../guest/workload.js';
import { LoadError } from '../load-error.js';
import type { RamLoader } from '../ram/ram-load.js';
import type { StreamReader } from '../stream/reader.js';
import { be32 } from '../stream/writer.js';
import { RpMessage } from '../stream/constants.js';
import { encodeRecvBitmap } from './recv-bitmap.js';

/** PostcopyState (savevm.c): the numbers QEMU prints in "in wrong postcopy state (N)". */
export const PostcopyState = { NONE: 0, ADVISE: 1, DISCARD: 2, LISTENING: 3, RUNNING: 4, END: 5 } as const;
type State = (typeof PostcopyState)[keyof typeof PostcopyState];

/** What the destination does as the postcopy commands arrive. */
export interface PostcopyHooks {
  /** Whether the destination has postcopy-ram on (a 16-byte advice needs it). */
  postcopyRam(): boolean;
  /** LISTEN: the migration is postcopy-active from here. */
  listen(): void;
  /** RUN: the guest starts here while its pages still come; `gate` says which pages are missing. */
  run(gate: PageGate): void;
  /** A page came (the guest's vCPU may be waiting for it). */
  arrived(page: number): void;
  /** A return-path message, and raw bytes that follow it outside the framing. */
  sendRp(type: number, payload: Buffer, raw?: Buffer): void;
  /** The incoming state is postcopy-recover, where RECV_BITMAP and RESUME belong. */
  recovering(): boolean;
  /** POSTCOPY_RESUME: postcopy-recover → postcopy-active. */
  resumed(): void;
  /**
   * The stream failed while the guest runs here (postcopy_pause_incoming()): postcopy-paused
   * until migrate-recover brings a new channel, whose reader this gives; undefined fails.
   */
  paused(err: unknown): Promise<StreamReader | undefined>;
}

export class PostcopyIncoming implements PageGate {
  state: State = PostcopyState.NONE;
  /** Pages asked for and not yet here (mis->page_requested), in the order asked. */
  private readonly requested = new Set<number>();
  /** REQ_PAGES_ID named the block on this channel, so REQ_PAGES may follow (mis->last_rb). */
  private blockNamed = false;
  /**
   * postcopy-blocktime: milliseconds the guest's one vCPU spent stopped on missing pages (with
   * one vCPU, also the time all of them were), and the page it waits on now.
   */
  blocktime = 0;
  private blocked?: { page: number; since: number };
  /** Told when the last page asked for has come (mis->page_request_cond). */
  private allArrived?: () => void;
  /** Resolved at RUN: from then on pages come (postcopy-preempt's channel waits for it), placed once. */
  readonly running: Promise<void>;
  private startRunning!: () => void;

  constructor(
    private readonly hooks: PostcopyHooks | undefined,
    private readonly loader: RamLoader,
  ) {
    this.running = new Promise((r) => (this.startRunning = r));
  }

  /** Past LISTEN: the rest of the stream is read as the listen thread reads it (no VM description). */
  get listening(): boolean {
    return this.state >= PostcopyState.LISTENING;
  }

  /** loadvm_postcopy_handle_advise() */
  advise(payload: Buffer): void {
    this.expect('POSTCOPY_ADVISE', PostcopyState.NONE);
    const len = payload.length;
    if (!this.hooks?.postcopyRam()) {
      // Bitmap-only advice (length 0) is harmless without postcopy-ram.
      if (len === 0) return;
      if (len === 16) throw new LoadError('EINVAL', 'RAM postcopy is disabled but have 16 byte advise');
    }
    if (len !== 16) throw new LoadError('EINVAL', `CMD_POSTCOPY_ADVISE invalid length (${len})`);
    const remotePageSizes = payload.readBigUInt64BE(0);
    const remoteTargetPage = payload.readBigUInt64BE(8);
    if (remotePageSizes !== BigInt(PAGE_SIZE)) {
      throw new LoadError('EINVAL', `Postcopy needs matching RAM page sizes (s=${remotePageSizes.toString(16)} d=${PAGE_SIZE.toString(16)})`);
    }
    if (remoteTargetPage !== BigInt(PAGE_SIZE)) {
      throw new LoadError('EINVAL', `Postcopy needs matching target page sizes (s=${remoteTargetPage} d=${PAGE_SIZE})`);
    }
    this.state = PostcopyState.ADVISE;
    // ramblock_recv_bitmap_set() from the first page on: the block list comes after the advice.
    const pages = this.loader.ram?.pages;
    if (pages) this.loader.received = new DirtyBitmap(pages);
  }

  /** loadvm_postcopy_ram_handle_discard(): the byte ranges are sent again, so they go now. */
  discard(payload: Buffer): void {
    this.expect('POSTCOPY_RAM_DISCARD', PostcopyState.ADVISE, PostcopyState.DISCARD);
    this.state = PostcopyState.DISCARD;
    const len = payload.length;
    if (len < 1 + 1 + 1 + 1 + 2 * 8) throw new LoadError('EINVAL', `CMD_POSTCOPY_RAM_DISCARD invalid length (${len})`);
    const version = payload[0]!;
    if (version !== 0) throw new LoadError('EINVAL', `CMD_POSTCOPY_RAM_DISCARD invalid version (${version})`);
    const nameLen = payload[1]!;
    if ((len - (1 + 1 + 1 + nameLen)) % 16 !== 0) throw new LoadError('EINVAL', `CMD_POSTCOPY_RAM_DISCARD invalid length (${len})`);
    const nil = payload[2 + nameLen];
    if (nil !== 0) throw new LoadError('EINVAL', `CMD_POSTCOPY_RAM_DISCARD missing nil (${nil})`);
    const ram = this.loader.ram;
    for (let at = 3 + nameLen; at < len; at += 16) {
      const start = Number(payload.readBigUInt64BE(at));
      const length = Number(payload.readBigUInt64BE(at + 8));
      if (!ram || start + length > ram.size || start % PAGE_SIZE || length % PAGE_SIZE) {
        throw new LoadError('EINVAL', `ram_discard_range: Bad range start=${start.toString(16)} length=${length.toString(16)}`);
      }
      for (let page = start / PAGE_SIZE; page < (start + length) / PAGE_SIZE; page++) {
        // ram_discard_range() frees the pages; here they are made zero, without touching those
        // nothing wrote (most of RAM at an early switch: filling them all held this thread, QMP
        // too, for a second per 512 MiB).
        ram.zeroPage(page);
        this.loader.received?.clear(page); // and clears the received bits
      }
    }
  }

  /** loadvm_postcopy_handle_listen() */
  listen(): void {
    this.expect('POSTCOPY_LISTEN', PostcopyState.ADVISE, PostcopyState.DISCARD);
    this.state = PostcopyState.LISTENING;
    // postcopy_ram_incoming_setup(): RAM is registered with userfaultfd; pages are placed once.
    this.loader.received ??= new DirtyBitmap(this.loader.ram!.pages);
    this.loader.taken = this.loader.received.copy();
    this.loader.postcopyPlacing = true;
    this.hooks?.listen();
  }

  /** loadvm_postcopy_handle_run() */
  run(): void {
    this.expect('POSTCOPY_RUN', PostcopyState.LISTENING);
    this.state = PostcopyState.RUNNING;
    this.loader.requested = new DirtyBitmap(this.loader.ram!.pages);
    this.loader.onPlaced = (page) => {
      if (!this.requested.delete(page)) return;
      this.loader.requested!.clearShared(page);
      if (this.blocked?.page === page) {
        this.blocktime += Math.round(performance.now() - this.blocked.since);
        this.blocked = undefined;
      }
      this.hooks?.arrived(page);
      if (this.requested.size === 0) this.allArrived?.();
    };
    this.hooks?.run(this);
    this.startRunning();
  }

  /**
   * postcopy_ram_incoming_cleanup() in 8.0+: the pages the guest asked for may still be on
   * their way over the preempt channel after the main one ended; the end waits for them.
   */
  async requestsServed(): Promise<void> {
    if (this.requested.size === 0) return;
    await new Promise<void>((r) => (this.allArrived = r));
    this.allArrived = undefined;
  }

  /** PageGate: whether the guest would fault on `page`. */
  missing(page: number): boolean {
    return !this.loader.received!.testShared(page);
  }

  /**
   * PageGate: the guest touched a missing page; it is asked for unless it was already. The load
   * thread may place it meanwhile: marked requested first, it is looked at once more after, so
   * that either the thread sees the mark (and tells) or this sees the page (and wakes the vCPU).
   */
  fault(page: number): void {
    this.blocked ??= { page, since: performance.now() };
    if (this.requested.has(page)) return;
    this.requested.add(page);
    this.loader.requested!.setShared(page);
    this.request(page);
    if (!this.missing(page)) queueMicrotask(() => this.loader.onPlaced?.(page));
  }

  /**
   * migrate_send_rp_req_pages(): REQ_PAGES_ID names the block the first time on a channel,
   * REQ_PAGES means the same block again; one target page at a time.
   */
  private request(page: number): void {
    const id = Buffer.from(this.loader.ram!.id, 'latin1');
    const payload = Buffer.alloc(this.blockNamed ? 12 : 13 + id.length);
    payload.writeBigUInt64BE(BigInt(page * PAGE_SIZE), 0);
    payload.writeUInt32BE(PAGE_SIZE, 8);
    if (!this.blockNamed) {
      payload[12] = id.length;
      id.copy(payload, 13);
    }
    this.hooks?.sendRp(this.blockNamed ? RpMessage.REQ_PAGES : RpMessage.REQ_PAGES_ID, payload);
    this.blockNamed = true;
  }

  /** The stream broke: the next channel starts afresh (its first request names the block). */
  channelLost(): void {
    this.blockNamed = false;
    this.loader.newChannel();
  }

  /** loadvm_handle_recv_bitmap(): RP RECV_BITMAP naming the block, then the bitmap itself. */
  recvBitmap(payload: Buffer): void {
    if (!this.hooks?.recovering()) throw new LoadError('EINVAL', 'loadvm_handle_recv_bitmap: Only reasonable to receive this command during postcopy-recover');
    const len = payload[0]!;
    if (payload.length !== len + 1) throw new LoadError('EINVAL', `CMD_RECV_BITMAP: invalid length (${payload.length})`);
    const name = payload.toString('latin1', 1);
    if (name !== this.loader.ram?.id) throw new LoadError('EINVAL', `loadvm_handle_recv_bitmap: block '${name}' not found`);
    this.hooks.sendRp(RpMessage.RECV_BITMAP, payload, encodeRecvBitmap(this.loader.received!));
  }

  /**
   * loadvm_postcopy_handle_resume(): the source is ready again; postcopy-active, RESUME_ACK, and
   * the pages the guest still waits for are asked for again on this channel.
   */
  resume(): void {
    if (!this.hooks?.recovering()) return; // "illegal resume received": reported, not fatal
    this.hooks.resumed();
    this.hooks.sendRp(RpMessage.RESUME_ACK, be32(1)); // MIGRATION_RESUME_ACK_VALUE
    for (const page of this.requested) this.request(page);
  }

  private expect(command: string, ...states: State[]): void {
    // The handlers return -1 here: -EPERM.
    if (!states.includes(this.state)) throw new LoadError('EPERM', `CMD_${command} in wrong postcopy state (${this.state})`);
  }
}
