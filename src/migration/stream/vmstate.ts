/**
 * The non-RAM parts of a stream: header, configuration section, section framing and footers,
 * the `timer` and `globalstate` device sections and the VM description, written exactly as
 * the profile's QEMU writes them for `-M none` (savevm.c, global_state.c, cpu-timers.c).
 */
import { activeProfile } from '../../profiles/index.js';
import {
  COMMAND_NAMES,
  GLOBALSTATE_SECTION_VERSION,
  GLOBALSTATE_STATE_BYTES,
  Section,
  SECTION_RECORDS,
  TIMER_SECTION_VERSION,
  VM_FILE_MAGIC,
  VM_FILE_VERSION,
} from './constants.js';
import type { StreamWriter } from './writer.js';

/**
 * The header and the configuration section. `caps`: the validated capabilities that are on
 * (profile.stream.validatedCapabilities), sent in the configuration/capabilities subsection so
 * that the destination can insist on the same (9.0+: mapped-ram changes the RAM format).
 */
export function writeHeader(w: StreamWriter, machine: string, caps: readonly string[] = []): void {
  w.be32(VM_FILE_MAGIC);
  w.be32(VM_FILE_VERSION);
  w.u8(Section.CONFIGURATION);
  const name = Buffer.from(machine, 'latin1');
  w.be32(name.length);
  w.bytes(name);
  if (caps.length === 0) return;
  w.u8(Section.SUBSECTION);
  w.countedString(CAPABILITIES_SUBSECTION);
  w.be32(1); // version
  w.be32(caps.length);
  for (const c of caps) w.countedString(c);
}

const CAPABILITIES_SUBSECTION = 'configuration/capabilities';

export function writeCommand(w: StreamWriter, cmd: number, payload: Uint8Array = new Uint8Array(0)): void {
  w.onRecord?.('command', COMMAND_NAMES[cmd]);
  w.u8(Section.COMMAND);
  w.be16(cmd);
  w.be16(payload.length);
  w.bytes(payload);
}

/** START or FULL section header (save_section_header). */
export function writeSectionStart(w: StreamWriter, type: number, id: number, idstr: string, instance: number, version: number): void {
  w.sectionNames.set(id, idstr);
  w.onRecord?.(SECTION_RECORDS[type]!, idstr);
  w.u8(type);
  w.be32(id);
  w.countedString(idstr);
  w.be32(instance);
  w.be32(version);
}

/** PART or END section header. */
export function writeSectionPart(w: StreamWriter, type: number, id: number): void {
  w.onRecord?.(SECTION_RECORDS[type]!, w.sectionNames.get(id));
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

/** The section ids of this release's `-M none` devices (the sender's choice, kept as QEMU's). */
export function sectionIds(): { timer: number; ram: number; globalstate: number } {
  return activeProfile().stream.sectionIds;
}

/** The end of the sections (QEMU_VM_EOF). */
export function writeEof(w: StreamWriter): void {
  w.onRecord?.('eof', undefined);
  w.u8(Section.EOF);
}

/**
 * Device state after RAM: FULL timer, FULL globalstate, EOF, then the VM description (which
 * describes the configuration section too in 9.0+, hence the machine).
 */
export function writeDeviceState(w: StreamWriter, timer: TimerState, runState: string, vmdesc = true, machine = 'none', caps: readonly string[] = []): void {
  const { globalState: layout, vmDescriptionConfiguration } = activeProfile().stream;
  writeDevices(w, timer, runState);
  writeEof(w);
  if (vmdesc) {
    const json = Buffer.from(vmDescription(machine, layout, vmDescriptionConfiguration, caps), 'latin1');
    w.u8(Section.VMDESCRIPTION);
    w.be32(json.length);
    w.bytes(json);
  }
}

/** The non-iterable devices' FULL sections: timer, globalstate (in postcopy, inside the package). */
export function writeDevices(w: StreamWriter, timer: TimerState, runState: string): void {
  const { sectionIds: ids, globalState: layout } = activeProfile().stream;
  writeSectionStart(w, Section.FULL, ids.timer, 'timer', 0, TIMER_SECTION_VERSION);
  w.be64(timer.cpuTicksOffset);
  w.be64(0n); // the unused 8-byte buffer
  w.be64(timer.cpuClockOffset);
  writeFooter(w, ids.timer);

  writeSectionStart(w, Section.FULL, ids.globalstate, 'globalstate', 0, GLOBALSTATE_SECTION_VERSION);
  const state = Buffer.alloc(GLOBALSTATE_STATE_BYTES);
  state.write(runState, 'latin1');
  // global_state_do_store() (9.0+): has_vm_was_suspended, and vm_was_suspended false.
  if (layout.suspendFlags) state[layout.runstateBytes] = 1;
  w.be32(Buffer.byteLength(runState, 'latin1') + 1);
  w.bytes(state);
  writeFooter(w, ids.globalstate);
}

/** What QEMU describes for `-M none`: the two devices above, in QEMU's JSON spacing. */
function vmDescription(machine: string, layout: { runstateBytes: number; suspendFlags: boolean }, configuration: boolean, caps: readonly string[]): string {
  const globalstate = layout.suspendFlags
    ? [
        { name: 'size', type: 'uint32', size: 4 },
        { name: 'runstate', type: 'buffer', size: layout.runstateBytes },
        { name: 'has_vm_was_suspended', type: 'uint8', size: 1 },
        { name: 'vm_was_suspended', type: 'uint8', size: 1 },
        { name: 'unused', type: 'buffer', size: GLOBALSTATE_STATE_BYTES - layout.runstateBytes - 2 },
      ]
    : [
        { name: 'size', type: 'uint32', size: 4 },
        { name: 'runstate', type: 'buffer', size: GLOBALSTATE_STATE_BYTES },
      ];
  return JSON.stringify({
    ...(configuration && {
      configuration: {
        vmsd_name: 'configuration', version: 1,
        fields: [
          { name: 'len', type: 'uint32', size: 4 },
          { name: 'name', type: 'buffer', size: Buffer.byteLength(machine, 'latin1') },
        ],
        ...(caps.length > 0 && {
          subsections: [
            {
              vmsd_name: CAPABILITIES_SUBSECTION, version: 1,
              fields: [
                { name: 'caps_count', type: 'uint32', size: 4 },
                // The counted strings' bytes (one entry: QEMU 10.0's own file says 11 for mapped-ram).
                { name: 'capabilities', type: 'capability', size: caps.reduce((n, c) => n + 1 + Buffer.byteLength(c, 'latin1'), 0) },
              ],
            },
          ],
        }),
      },
    }),
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
      { name: 'globalstate', instance_id: 0, vmsd_name: 'globalstate', version: 1, fields: globalstate },
    ],
  }).replace(/([,:])/g, '$1 ');
}
