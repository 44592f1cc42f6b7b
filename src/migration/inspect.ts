/**
 * `qmigd inspect`: reads a migration stream with the destination's own loader (so it stops
 * exactly where a qmigd or QEMU destination of the active profile's release would, and says why) and reports what it holds:
 * sections with their offsets, RAM records by type, commands, device state and the VM
 * description, like QEMU's scripts/analyze-migration.py. The RAM it produces can be saved.
 */
import { GuestRam } from '../guest/ram.js';
import { activeProfile } from '../profiles/index.js';
import { LoadError } from './load-error.js';
import { loadVmState, type LoadObserver } from './loadvm.js';
import { RamFlag, Section } from './stream/constants.js';
import type { MappedRamSource } from './ram/mapped-ram.js';
import { StreamReader, type ByteSource } from './stream/reader.js';

export interface InspectResult {
  ok: boolean;
  ram?: GuestRam;
}

const SECTION_NAMES: Record<number, string> = {
  [Section.START]: 'START', [Section.PART]: 'PART', [Section.END]: 'END', [Section.FULL]: 'FULL',
};
const RECORD_NAMES: Record<number, string> = {
  [RamFlag.ZERO]: 'ZERO', [RamFlag.PAGE]: 'PAGE', [RamFlag.XBZRLE]: 'XBZRLE', [RamFlag.COMPRESS_PAGE]: 'COMPRESS_PAGE',
  [RamFlag.MEM_SIZE]: 'MEM_SIZE', [RamFlag.MULTIFD_FLUSH]: 'MULTIFD_FLUSH',
};
/** No RAM block larger than this is made for an inspected stream. */
const MAX_RAM = 64 * 2 ** 30;

const hex = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

/**
 * `input`: the stream; `file`, when it is a file, for what mapped-ram keeps at offsets of it
 * (without one, a mapped-ram stream is reported as unreadable from a pipe).
 */
export async function inspectStream(input: ByteSource, print: (line: string) => void, file?: MappedRamSource): Promise<InspectResult> {
  const records = new Map<string, number>();
  const totals = new Map<string, number>();
  let sections = 0;
  let commands = 0;
  const observer: LoadObserver = {
    header: (v) => print(`${hex(0)}  header         QEVM, stream version ${v}`),
    configuration: (m) => print(`${hex(8)}  configuration  machine "${m}"`),
    section: (s) => {
      sections++;
      records.clear();
      const what = s.version === undefined ? `${s.idstr} (section ${s.id})` : `${s.idstr} (section ${s.id}, instance ${s.instance}, version ${s.version})`;
      print(`${hex(s.offset)}  ${SECTION_NAMES[s.type]!.padEnd(14)} ${what}`);
    },
    mappedRamBlock: (m) => {
      print(`${hex(m.offset)}  mapped-ram     block "${m.id}": header version ${m.version}, page size ${m.pageSize}`);
      print(`${' '.repeat(26)}bitmap at ${hex(m.bitmapOffset)} (${m.bitmapBytes} bytes), pages at ${hex(m.pagesOffset)} (${m.pages * m.pageSize} bytes)`);
      print(`${' '.repeat(26)}${m.pagesInFile} of ${m.pages} pages in the file, ${m.pages - m.pagesInFile} not (zero)`);
    },
    ramRecord: (type) => {
      const name = RECORD_NAMES[type]!;
      records.set(name, (records.get(name) ?? 0) + 1);
      totals.set(name, (totals.get(name) ?? 0) + 1);
    },
    sectionEnd: () => {
      if (records.size) print(`${' '.repeat(26)}${[...records].map(([k, v]) => `${v} ${k}`).join(', ')}`);
    },
    command: (offset, name, payload) => {
      commands++;
      const arg = payload.length === 4 ? ` ${payload.readUInt32BE(0)}` : payload.length ? ` (${payload.length} bytes)` : '';
      print(`${hex(offset)}  COMMAND        ${name}${arg}`);
    },
    device: (_idstr, fields) => print(`${' '.repeat(26)}${Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'string' ? `"${v}"` : v}`).join(' ')}`),
    eof: (offset) => print(`${hex(offset)}  EOF`),
    vmDescription: (offset, json) => {
      if (json === undefined) return print(`${hex(offset)}  (no VM description)`);
      let devices = '';
      try {
        const d = JSON.parse(json) as { devices?: Array<{ name: string; version: number }> };
        devices = (d.devices ?? []).map((x) => `${x.name} v${x.version}`).join(', ');
      } catch {
        devices = 'not valid JSON';
      }
      print(`${hex(offset)}  VMDESCRIPTION  ${json.length} bytes of JSON: ${devices}`);
    },
  };
  const reader = new StreamReader(input);
  try {
    const result = await loadVmState(reader, {
      ram: (id, size) => {
        if (size <= 0 || size > MAX_RAM || size % 4096 !== 0) throw new LoadError('EINVAL', `RAM block "${id}" of ${size} bytes is too large to inspect`);
        return new GuestRam(id, size);
      },
      // A recording has no way back, and no guest: what needs one is accepted and goes nowhere.
      hooks: {
        openReturnPath: () => true,
        sendPong: () => true,
        postcopy: {
          postcopyRam: () => true,
          listen: () => undefined,
          run: () => undefined,
          arrived: () => undefined,
          sendRp: () => undefined,
          recovering: () => true,
          resumed: () => undefined,
          paused: async () => undefined,
        },
      },
      warn: (m) => print(`warning: ${m}`),
      observer,
      mapped: file,
      capabilitiesFromStream: true,
    });
    print('');
    print(`${result.bytes} bytes: ${sections} sections, ${commands} commands; RAM records: ${[...totals].map(([k, v]) => `${v} ${k}`).join(', ') || 'none'}`);
    if (result.ram) {
      const sha = await result.ram.sha256();
      print(`RAM block "${result.ram.id}": ${result.ram.size} bytes, sha256 ${sha}`);
    }
    return { ok: true, ram: result.ram };
  } catch (err) {
    print('');
    if (!(err instanceof LoadError)) throw err;
    print(`error: ${err.located}`);
    for (const line of err.lines.slice(1)) print(`       ${line}`);
    print(`       (a QEMU ${activeProfile().id} destination would report: ${err.summary})`);
    return { ok: false };
  }
}
