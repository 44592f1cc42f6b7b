/**
 * Streams written by qmigd's own source code (StreamWriter, the vmstate writers and RamSaver, as
 * outgoing.ts uses them) from a small guest of a few dozen pages, for tests that need streams
 * cheap to load many times: a START section with the block list, PART sections of a first pass,
 * more passes over pages changed in between (XBZRLE records with `xbzrle`), the END section, the
 * device sections, EOF and the VM description. Options add what only some sources send.
 */
import { GuestRam, PAGE_SIZE } from '../../src/guest/ram.js';
import { defaultParameters } from '../../src/migration/params.js';
import { RamSaver } from '../../src/migration/ram/ram-save.js';
import { activeProfile } from '../../src/profiles/index.js';
import { Command, RAM_SECTION_VERSION, RamFlag, Section } from '../../src/migration/stream/constants.js';
import { sectionIds, writeCommand, writeDeviceState, writeFooter, writeHeader, writeSectionPart, writeSectionStart } from '../../src/migration/stream/vmstate.js';
import { StreamWriter } from '../../src/migration/stream/writer.js';
import { below, rng } from './rng.js';

export interface GenOptions {
  seed: number;
  pages: number;
  /** Passes after the first, over pages changed in between. */
  passes?: number;
  /** Pages per PART section. */
  pagesPerPart?: number;
  xbzrle?: boolean;
  /** OPEN_RETURN_PATH and PING(1), as with the return-path capability. */
  returnPath?: boolean;
  /** ENABLE_COLO, as with x-colo. */
  colo?: boolean;
  /**
   * A configuration/uuid subsection after the machine name: what QEMU 7.2 sends with the
   * validate-uuid capability and `-uuid` (qmigd's own source never does).
   */
  uuid?: boolean;
  /** The VM description after EOF (default true). */
  vmDescription?: boolean;
  runState?: string;
}

export interface Generated {
  name: string;
  stream: Buffer;
  ramSize: number;
  /** The source's RAM when the stream ends: what a destination must end with. */
  ram: Buffer;
  vmDescription: boolean;
}

/** configuration/uuid v1 (vmstate_uuid in savevm.c): 0x05, counted name, be32 version, 16 bytes. */
export function uuidSubsection(uuid: Uint8Array): Buffer {
  const w = new StreamWriter();
  w.u8(Section.SUBSECTION);
  w.countedString('configuration/uuid');
  w.be32(1);
  w.bytes(uuid);
  return Buffer.concat(w.take().pieces);
}

export function generateStream(o: GenOptions): Generated {
  const rand = rng(o.seed);
  const ram = new GuestRam('m', o.pages * PAGE_SIZE);
  // Zero pages, random pages, constant pages and sparse pages, as the mixed vector has.
  for (let p = 0; p < o.pages; p++) {
    const page = ram.page(p);
    const kind = below(rand, 4);
    if (kind === 0) continue;
    if (kind === 1) for (let i = 0; i < PAGE_SIZE; i++) page[i] = below(rand, 256);
    else if (kind === 2) page.fill(1 + below(rand, 255));
    else for (let k = 0; k < 8; k++) page[below(rand, PAGE_SIZE)] = 1 + below(rand, 255);
    ram.wrote(p);
  }
  const w = new StreamWriter();
  // Pages go into the writer by reference: each section is copied out before RAM changes again.
  const out: Buffer[] = [];
  const cut = (): void => {
    out.push(Buffer.concat(w.take().pieces));
  };
  writeHeader(w, 'none');
  if (o.uuid) w.bytes(uuidSubsection(Uint8Array.from({ length: 16 }, () => below(rand, 256))));
  if (o.returnPath) {
    writeCommand(w, Command.OPEN_RETURN_PATH);
    writeCommand(w, Command.PING, Buffer.from([0, 0, 0, 1]));
  }
  if (o.colo) writeCommand(w, Command.ENABLE_COLO);
  const saver = new RamSaver(ram, {
    xbzrle: o.xbzrle ?? false,
    autoConverge: false,
    params: () => ({ ...defaultParameters(), 'xbzrle-cache-size': 1n << 20n }),
    guestRunning: () => true,
    syncDirtyLog: () => undefined,
    onPass: () => undefined,
    onThrottle: () => undefined,
    throttlePercent: () => 0,
  });
  writeSectionStart(w, Section.START, sectionIds().ram, 'ram', 0, RAM_SECTION_VERSION);
  saver.setup(w);
  w.be64(RamFlag.EOS);
  writeFooter(w, sectionIds().ram);
  const perPart = o.pagesPerPart ?? 16;
  for (let pass = 0; pass <= (o.passes ?? 1); pass++) {
    if (pass > 0) {
      // The guest changes a few bytes of some pages (small XBZRLE deltas) and zeroes others.
      for (let k = 1 + below(rand, 6); k > 0; k--) {
        // Half of them among a few hot pages, so that some change pass after pass (XBZRLE).
        const p = below(rand, 2) ? below(rand, Math.min(4, o.pages)) : below(rand, o.pages);
        const page = ram.page(p);
        if (below(rand, 5) === 0) page.fill(0);
        else for (let j = 1 + below(rand, 16); j > 0; j--) page[below(rand, PAGE_SIZE)] = below(rand, 256);
        ram.wrote(p);
        ram.dirtyLog.set(p);
      }
      saver.sync();
    }
    while (saver.dirtyPages > 0) {
      writeSectionPart(w, Section.PART, sectionIds().ram);
      for (let n = 0; n < perPart && saver.saveNext(w); n++);
      saver.endIteration(w);
      writeFooter(w, sectionIds().ram);
      cut();
    }
  }
  // As the profile's source does at switchover with -M none (10.0: SWITCHOVER_START).
  if (activeProfile().migrationGlobals.defaults['send-switchover-start']) writeCommand(w, Command.SWITCHOVER_START);
  writeSectionPart(w, Section.END, sectionIds().ram);
  saver.enterLastStage();
  saver.sync();
  while (saver.saveNext(w));
  w.be64(RamFlag.EOS);
  writeFooter(w, sectionIds().ram);
  const ticks = BigInt(below(rand, 2 ** 31)) * 1000n;
  writeDeviceState(w, { cpuTicksOffset: ticks, cpuClockOffset: -ticks }, o.runState ?? 'running', o.vmDescription ?? true);
  cut();
  const flags = [o.xbzrle && 'xbzrle', o.returnPath && 'return-path', o.colo && 'colo', o.uuid && 'uuid', o.vmDescription === false && 'no-vmdesc']
    .filter(Boolean)
    .join(',');
  return {
    name: `generated ${o.pages} pages seed ${o.seed}${flags ? ` (${flags})` : ''}`,
    stream: Buffer.concat(out),
    ramSize: ram.size,
    ram: Buffer.concat(ram.segments),
    vmDescription: o.vmDescription ?? true,
  };
}

/**
 * The main stream as a source starts it: the header and the RAM setup section up to its EOS,
 * where a multifd destination waits for every channel's SYNC.
 */
export function setupStream(blockId: string, size: number): Buffer {
  const w = new StreamWriter();
  writeHeader(w, 'none');
  writeSectionStart(w, Section.START, sectionIds().ram, 'ram', 0, RAM_SECTION_VERSION);
  w.be64(size + RamFlag.MEM_SIZE);
  w.countedString(blockId);
  w.be64(size);
  w.be64(RamFlag.EOS);
  return Buffer.concat(w.take().pieces);
}
