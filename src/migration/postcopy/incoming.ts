/**
 * The destination's side of postcopy (savevm.c's loadvm_postcopy_handle_*, postcopy-ram.c), as
 * far as it is built: the commands of a postcopy stream in the states QEMU takes them in. A
 * source advises postcopy, discards the pages it will send again, and sends the device state in
 * a package that opens with LISTEN and ends with RUN; from RUN on the guest runs here while the
 * rest of RAM comes. Page requests (a guest touching a page not yet here), pause and recovery
 * are not built yet: the guest runs, and the pages still to come overwrite what it writes.
 */
import { PAGE_SIZE, type GuestRam } from '../../guest/ram.js';
import { LoadError } from '../load-error.js';

/** PostcopyState (savevm.c): the numbers QEMU prints in "in wrong postcopy state (N)". */
export const PostcopyState = { NONE: 0, ADVISE: 1, DISCARD: 2, LISTENING: 3, RUNNING: 4, END: 5 } as const;
type State = (typeof PostcopyState)[keyof typeof PostcopyState];

/** What the destination does as the postcopy commands arrive. */
export interface PostcopyHooks {
  /** Whether the destination has postcopy-ram on (a 16-byte advice needs it). */
  postcopyRam(): boolean;
  /** LISTEN: the migration is postcopy-active from here. */
  listen(): void;
  /** RUN: the guest starts here while its pages still come. */
  run(): void;
}

export class PostcopyIncoming {
  state: State = PostcopyState.NONE;

  constructor(
    private readonly hooks: PostcopyHooks | undefined,
    private readonly ram: () => GuestRam | undefined,
  ) {}

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
    const ram = this.ram();
    for (let at = 3 + nameLen; at < len; at += 16) {
      const start = Number(payload.readBigUInt64BE(at));
      const length = Number(payload.readBigUInt64BE(at + 8));
      if (!ram || start + length > ram.size || start % PAGE_SIZE || length % PAGE_SIZE) {
        throw new LoadError('EINVAL', `ram_discard_range: Bad range start=${start.toString(16)} length=${length.toString(16)}`);
      }
      for (let page = start / PAGE_SIZE; page < (start + length) / PAGE_SIZE; page++) ram.page(page).fill(0);
    }
  }

  /** loadvm_postcopy_handle_listen() */
  listen(): void {
    this.expect('POSTCOPY_LISTEN', PostcopyState.ADVISE, PostcopyState.DISCARD);
    this.state = PostcopyState.LISTENING;
    this.hooks?.listen();
  }

  /** loadvm_postcopy_handle_run() */
  run(): void {
    this.expect('POSTCOPY_RUN', PostcopyState.LISTENING);
    this.state = PostcopyState.RUNNING;
    this.hooks?.run();
  }

  private expect(command: string, ...states: State[]): void {
    // The handlers return -1 here: -EPERM.
    if (!states.includes(this.state)) throw new LoadError('EPERM', `CMD_${command} in wrong postcopy state (${this.state})`);
  }
}
