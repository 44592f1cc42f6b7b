/**
 * What the guest does while it runs: it writes pages at a set rate and marks them in the dirty
 * log, changing only a few bytes of each page so that XBZRLE finds real, small deltas. It only
 * writes while the guest runs, and a CPU throttle (auto-converge) slows it as it would slow a
 * vCPU: a vCPU throttled by P% runs (100 - P)% of the time.
 */
import { pageOffset, PAGE_SIZE, type GuestRam } from './ram.js';

export type WorkloadPattern =
  | { kind: 'uniform' }
  | { kind: 'sequential' }
  /** Every write lands in the first PERCENT% of RAM. */
  | { kind: 'hot'; percent: number };

export function parseWorkloadPattern(text: string): WorkloadPattern {
  if (text === 'uniform' || text === 'sequential') return { kind: text };
  const m = /^hot:(\d{1,3})$/.exec(text);
  if (m && Number(m[1]) >= 1 && Number(m[1]) <= 100) return { kind: 'hot', percent: Number(m[1]) };
  throw new Error(`'${text}' is not a workload pattern (uniform, sequential or hot:PERCENT with PERCENT 1..100)`);
}

export function formatWorkloadPattern(p: WorkloadPattern): string {
  return p.kind === 'hot' ? `hot:${p.percent}` : p.kind;
}

/** Writes happen on this period; each tick does the writes the rate owes since the last one. */
const TICK_MS = 10;
/** Bytes changed in each page written: small, so an XBZRLE delta is small too. */
const WRITE_BYTES = 16;
/** Writes a journal keeps at most (a test's record of what the guest wrote). */
const JOURNAL_MAX = 200_000;

/**
 * Postcopy on the destination: pages not here yet. The guest's vCPU stops on one it touches
 * (userfaultfd), the page is asked for, and the vCPU goes on once it has come.
 */
export interface PageGate {
  missing(page: number): boolean;
  fault(page: number): void;
}

/** One write the guest made: 16 bytes at `offset` of `page`. */
export interface JournalEntry {
  page: number;
  offset: number;
  data: string;
}

export class Workload {
  rate = 0;
  pattern: WorkloadPattern = { kind: 'uniform' };
  /** Auto-converge's CPU throttle, 0..99. */
  throttlePercent = 0;
  pagesDirtied = 0;
  /** Touches of a page that was not here (postcopy's vCPU faults). */
  pageFaults = 0;
  /** Where the guest waits in postcopy: pages not here stop it. */
  gate?: PageGate;
  /** Each write, while a journal is kept (tests replay it to check that none was lost). */
  journal?: { entries: JournalEntry[]; overflow: boolean };
  /** The page the vCPU is stopped on, and whether it will write it once it is here. */
  private blocked?: { page: number; write: boolean };
  private owed = 0;
  private last = performance.now();
  private cursor = 0;
  private seed = 0x9e3779b9;
  /** Ticks only while a rate is set: an idle daemon does not wake up (100 times a second). */
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly ram: GuestRam,
    private readonly guestRunning: () => boolean,
  ) {}

  get active(): boolean {
    return this.rate > 0 && this.guestRunning();
  }

  set(rate: number, pattern?: WorkloadPattern): void {
    this.rate = rate;
    if (pattern) this.pattern = pattern;
    this.owed = 0;
    if (rate > 0 && !this.timer) {
      this.last = performance.now();
      this.timer = setInterval(() => this.advance(), TICK_MS);
      this.timer.unref();
    } else if (rate <= 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }


  /**
   * Does the writes owed up to now. The timer calls it; so does every dirty-log sync, because a
   * real vCPU dirties memory continuously, not in 10 ms bursts.
   */
  advance(): void {
    const now = performance.now();
    const elapsed = now - this.last;
    this.last = now;
    if (!this.active) {
      this.owed = 0;
      return;
    }
    // A stopped timer (a long event-loop turn) does not turn into a burst of writes later.
    const ms = Math.min(elapsed, 10 * TICK_MS);
    this.owed += ((this.rate * (100 - this.throttlePercent)) / 100) * (ms / 1000);
    const pages = Math.floor(this.owed / PAGE_SIZE);
    this.owed -= pages * PAGE_SIZE;
    if (!this.gate) {
      for (let i = 0; i < pages; i++) this.write(this.nextPage());
      return;
    }
    // Where pages can be missing, the guest also reads: a load, then a store, per write.
    for (let i = 0; i < pages && !this.blocked; i++) {
      if (this.touch(this.nextPage(), false)) this.touch(this.nextPage(), true);
    }
    if (this.blocked) this.owed = 0; // a stopped vCPU does no work meanwhile
  }

  /** Whether the vCPU is stopped on a missing page. */
  get stalled(): boolean {
    return this.blocked !== undefined;
  }

  /** A page came: the vCPU stopped on it does its access and goes on. */
  pageArrived(page: number): void {
    if (this.blocked?.page !== page) return;
    const { write } = this.blocked;
    this.blocked = undefined;
    if (write) this.write(page);
  }

  /** Postcopy is over (or gone): every page is here, and a stopped vCPU runs again. */
  openGate(): void {
    const blocked = this.blocked;
    this.gate = undefined;
    if (blocked) this.pageArrived(blocked.page);
  }

  /** A read or write of `page`; false when the page is missing and the vCPU now waits for it. */
  private touch(page: number, write: boolean): boolean {
    if (this.gate!.missing(page)) {
      this.pageFaults++;
      this.blocked = { page, write };
      this.gate!.fault(page);
      return false;
    }
    if (write) this.write(page);
    return true;
  }

  private nextPage(): number {
    const pages = this.ram.pages;
    switch (this.pattern.kind) {
      case 'sequential':
        this.cursor = (this.cursor + 1) % pages;
        return this.cursor;
      case 'hot':
        return this.random() % Math.max(1, Math.ceil((pages * this.pattern.percent) / 100));
      case 'uniform':
        return this.random() % pages;
    }
  }

  private write(page: number): void {
    const n = ++this.pagesDirtied;
    const at = pageOffset(page) + ((n * 64) % PAGE_SIZE);
    const bytes = this.ram.segment(page);
    for (let i = 0; i < WRITE_BYTES; i += 4) bytes.writeUInt32LE(this.random(), at + i);
    const journal = this.journal;
    if (journal && journal.entries.length < JOURNAL_MAX) {
      journal.entries.push({ page, offset: at % PAGE_SIZE, data: bytes.toString('hex', at, at + WRITE_BYTES) });
    } else if (journal) journal.overflow = true;
    this.ram.dirtyLog.set(page);
    this.ram.wrote(page);
  }

  /** xorshift32: cheap, and good enough to spread writes. */
  private random(): number {
    let x = this.seed;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.seed = x >>> 0;
    return this.seed;
  }
}
