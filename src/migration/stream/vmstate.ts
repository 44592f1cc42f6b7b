/**
 * The non-RAM parts of a stream: header, configuration section, section framing and footers,
 * the `timer` and `globalstate` device sections and the VM description, written exactly as
 * QEMU 7.2 writes them for `-M none` (savevm.c, global_state.c, cpu-timers.c).
 */
import {
  GLOBALSTATE_RUNSTATE_BYTES,
  GLOBALSTATE_SECTION_VERSION,
  Section,
  SectionIds,
  TIMER_SECTION_VERSION,
  VM_FILE_MAGIC,
  VM_FILE_VERSION,
} from './constants.js';
import type { StreamWriter } from './writer.js';

export function writeHeader(w: StreamWriter, machine: string): void {
  w.be32(VM_FILE_MAGIC);
  w.be32(VM_FILE_VERSION);
  w.u8(Section.CONFIGURATION);
  const name = Buffer.from(machine, 'latin1');
  w.be32(name.length);
  w.bytes(name);
}

export function writeCommand(w: StreamWriter, cmd: number, payload: Uint8Array = new Uint8Array(0)): void {
  w.u8(Section.COMMAND);
  w.be16(cmd);
  w.be16(payload.length);
  w.bytes(payload);
}

/** START or FULL section header (save_section_header). */
export function writeSectionStart(w: StreamWriter, type: number, id: number, idstr: string, instance: number, version: number): void {
  w.u8(type);
  w.be32(id);
  w.countedString(idstr);
  w.be32(instance);
  w.be32(version);
}

/** PART or END section header. */
export function writeSectionPart(w: StreamWriter, type: number, id: number): void {
  w.u8(type);
  w.be32(id);
}

export function writeFooter(w: StreamWriter, id: number): void {
  w.u8(Section.FOOTER);
  w.be32(id);
}

/** The clocks a destination adopts; QEMU sends host-dependent offsets, zeros are accepted. */
export interface TimerState {
  cpuTicksOffset: bigint;
  cpuClockOffset: bigint;
}

/** Device state after RAM: FULL timer, FULL globalstate, EOF, then the VM description. */
export function writeDeviceState(w: StreamWriter, timer: TimerState, runState: string, vmdesc = true): void {
  writeSectionStart(w, Section.FULL, SectionIds.timer, 'timer', 0, TIMER_SECTION_VERSION);
  w.be64(timer.cpuTicksOffset);
  w.be64(0n); // the unused 8-byte buffer
  w.be64(timer.cpuClockOffset);
  writeFooter(w, SectionIds.timer);

  writeSectionStart(w, Section.FULL, SectionIds.globalstate, 'globalstate', 0, GLOBALSTATE_SECTION_VERSION);
  const name = Buffer.alloc(GLOBALSTATE_RUNSTATE_BYTES);
  name.write(runState, 'latin1');
  w.be32(Buffer.byteLength(runState, 'latin1') + 1);
  w.bytes(name);
  writeFooter(w, SectionIds.globalstate);

  w.u8(Section.EOF);
  if (vmdesc) {
    const json = Buffer.from(VM_DESCRIPTION, 'latin1');
    w.u8(Section.VMDESCRIPTION);
    w.be32(json.length);
    w.bytes(json);
  }
}

/** What QEMU 7.2 describes for `-M none`: the two devices above, in QEMU's JSON spacing. */
export const VM_DESCRIPTION = JSON.stringify({
  page_size: 4096,
  devices: [
    {
      name: 'timer', instance_id: 0, vmsd_name: 'timer', version: 2,
      fields: [
        { name: 'cpu_ticks_offset', type: 'int64', size: 8 },
        { name: 'unused', type: 'unused_buffer', size: 8 },
        { name: 'cpu_clock_offset', type: 'int64', size: 8 },
      ],
    },
    {
      name: 'globalstate', instance_id: 0, vmsd_name: 'globalstate', version: 1,
      fields: [
        { name: 'size', type: 'uint32', size: 4 },
        { name: 'runstate', type: 'buffer', size: 100 },
      ],
    },
  ],
}).replace(/([,:])/g, '$1 ');
