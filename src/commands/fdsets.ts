/**
 * QEMU 7.2's file descriptor sets (monitor/fds.c): global, numbered, each a list of descriptors
 * passed with add-fd. qmigd opens nothing through /dev/fdset/N, so no set ever has a duplicate
 * in use (dup_fds), and cleanup follows the rules that leaves:
 *
 * - remove-fd marks descriptors removed; a removed one is closed, and leaves the list, only
 *   while the guest is running (runstate_is_running()). With the guest stopped it stays, still
 *   listed by query-fdsets and removable again, until a cleanup that finds the guest running.
 * - At every client disconnect (monitor_fdsets_cleanup()), with the guest running, removed
 *   descriptors are closed, and when no monitor client is left at all, every descriptor is.
 * - A set with no descriptor left is gone.
 *
 * QEMU bounds nothing here; qmigd holds at most MAX_FDSET_FDS, so that clients cannot exhaust
 * the daemon's descriptors.
 */
import { closeFd } from '../qmp/descriptors.js';

export const MAX_FDSET_FDS = 256;

interface SetFd {
  fd: number;
  opaque?: string;
  removed: boolean;
}

/** What a cleanup depends on: the guest's run state and how many monitor clients are connected. */
export interface CleanupState {
  running: boolean;
  monitors: number;
}

/** An int64 as QMP shows it: a number where one is exact. */
type Int64 = number | bigint;

export class FdSets {
  /**
   * By id (int64, so bigint); mon_fdsets is kept ordered by id. Each set's descriptors newest
   * first, as QLIST_INSERT_HEAD leaves them.
   */
  private readonly sets = new Map<bigint, SetFd[]>();
  private count = 0;

  /**
   * monitor_fdset_add_fd(): into the set given, or a new one (the lowest id not taken, as
   * QEMU's walk finds it). A negative id is refused (QEMU refuses it where it would make a set
   * for it, and none can exist); 'full' when qmigd holds its limit. The caller closes `fd`
   * when it is refused.
   */
  add(fd: number, fdsetId: Int64 | undefined, opaque: string | undefined): { 'fdset-id': Int64; fd: number } | 'negative-id' | 'full' {
    const given = fdsetId === undefined ? undefined : BigInt(fdsetId);
    if (given !== undefined && given < 0n) return 'negative-id';
    if (this.count >= MAX_FDSET_FDS) return 'full';
    const id = given ?? this.firstFreeId();
    let set = this.sets.get(id);
    if (!set) this.sets.set(id, (set = []));
    set.unshift({ fd, opaque, removed: false });
    this.count++;
    return { 'fdset-id': shown(id), fd };
  }

  /** qmp_remove_fd(): false when the set, or the descriptor in it, is not there. */
  remove(fdsetId: Int64, fd: Int64 | undefined, state: CleanupState): boolean {
    const id = BigInt(fdsetId);
    const set = this.sets.get(id);
    if (!set) return false;
    if (fd === undefined) set.forEach((f) => (f.removed = true));
    else {
      const hit = set.find((f) => BigInt(f.fd) === BigInt(fd));
      if (!hit) return false;
      hit.removed = true;
    }
    this.cleanup(id, state);
    return true;
  }

  /** qmp_query_fdsets(): the lists are prepended as they are walked, so both orders come out reversed. */
  query(): Array<{ 'fdset-id': Int64; fds: Array<{ fd: number; opaque?: string }> }> {
    return [...this.sorted()].reverse().map(([id, set]) => ({
      'fdset-id': shown(id),
      fds: [...set].reverse().map((f) => (f.opaque === undefined ? { fd: f.fd } : { fd: f.fd, opaque: f.opaque })),
    }));
  }

  /** monitor_fdsets_cleanup(): after a client disconnects. */
  cleanupAll(state: CleanupState): void {
    for (const id of [...this.sets.keys()]) this.cleanup(id, state);
  }

  /** monitor_fdset_cleanup() */
  private cleanup(id: bigint, { running, monitors }: CleanupState): void {
    const set = this.sets.get(id)!;
    const keep = set.filter((f) => {
      if (!((f.removed || monitors === 0) && running)) return true;
      closeFd(f.fd);
      this.count--;
      return false;
    });
    if (keep.length) this.sets.set(id, keep);
    else this.sets.delete(id);
  }

  private sorted(): Array<[bigint, SetFd[]]> {
    return [...this.sets.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** One past the end of the run of ids that starts at 0: the first gap. */
  private firstFreeId(): bigint {
    let id = 0n;
    for (const [taken] of this.sorted()) {
      if (taken !== id) break;
      id++;
    }
    return id;
  }
}

function shown(id: bigint): Int64 {
  return Number.isSafeInteger(Number(id)) ? Number(id) : id;
}
