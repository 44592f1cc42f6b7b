/**
 * The human monitor behind `human-monitor-command`, printing as QEMU's HMP prints (lines end in
 * CRLF, as QEMU's monitor writes them). Only commands qmigd really implements are listed; each
 * runs the same code as its QMP twin.
 */
import type { Daemon } from '../daemon/context.js';
import { QmpError } from '../errors.js';
import { contGuest, stopGuest } from './run-state.js';

interface HmpCommand {
  /** As QEMU's help shows it: "stop|s". */
  names: string;
  args: string;
  help: string;
  /** Takes the rest of the line; a command without `args` refuses any. */
  run: (d: Daemon, rest: string) => string;
}

const INFO: HmpCommand[] = [
  {
    names: 'name', args: '', help: 'show the current VM name',
    run: (d) => (d.config.name !== undefined ? `${d.config.name}\n` : ''),
  },
  {
    names: 'status', args: '', help: 'show the current VM status (running|paused)',
    run: (d) => {
      const s = d.guest.runState.state;
      return `VM status: ${d.guest.runState.running ? 'running' : 'paused'}${!d.guest.runState.running && s !== 'paused' ? ` (${s})` : ''}\n`;
    },
  },
  {
    names: 'version', args: '', help: 'show the version of QEMU',
    run: (d) => `${d.version.major}.${d.version.minor}.${d.version.micro}${d.version.package}\n`,
  },
];

const COMMANDS: HmpCommand[] = [
  { names: 'cont|c', args: '', help: 'resume emulation', run: (d) => (contGuest(d), '') },
  { names: 'help|?', args: '[cmd]', help: 'show the help', run: (_d, rest) => help(rest) },
  { names: 'info', args: '[subcommand]', help: 'show various information about the system state', run: (d, rest) => info(d, rest) },
  {
    names: 'quit|q', args: '', help: 'quit the emulator',
    run: (d) => (d.shutdown('host-qmp-quit'), ''),
  },
  { names: 'stop|s', args: '', help: 'stop emulation', run: (d) => (stopGuest(d), '') },
];

const helpLine = (c: HmpCommand, prefix = ''): string => `${prefix}${c.names} ${c.args} -- ${c.help}\n`;
const find = (table: HmpCommand[], name: string): HmpCommand | undefined =>
  table.find((c) => c.names.split('|').includes(name));

function help(rest: string): string {
  const words = rest.trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return COMMANDS.map((c) => helpLine(c)).join('');
  if (words[0] === 'info') {
    if (words.length === 1) return INFO.map((c) => helpLine(c, 'info ')).join('');
    const sub = find(INFO, words[1]!);
    return sub ? helpLine(sub, 'info ') : `unknown command: 'info ${words[1]}'\n`;
  }
  const c = find(COMMANDS, words[0]!);
  return c ? helpLine(c) : `unknown command: '${words[0]}'\n`;
}

function info(d: Daemon, rest: string): string {
  const [name, ...more] = rest.trim().split(/\s+/).filter(Boolean);
  if (name === undefined) return INFO.map((c) => helpLine(c, 'info ')).join('');
  const sub = find(INFO, name);
  if (!sub) return `unknown command: 'info ${name}'\n`;
  if (more.length) return extraneous(sub, `info ${name}`);
  return sub.run(d, '');
}

function extraneous(c: HmpCommand, helpTopic: string): string {
  return `${c.names}: extraneous characters at the end of line\nTry "help ${helpTopic}" for more information\n`;
}

/** Runs one HMP command line; QMP errors come back as HMP prints them ("Error: ..."). */
export function runHmp(d: Daemon, line: string): string {
  const trimmed = line.replace(/^\s+/, '');
  const match = /^(\S*)\s*(.*)$/s.exec(trimmed)!;
  const [, name = '', rest = ''] = match;
  let out: string;
  if (name === '') out = '';
  else {
    const c = find(COMMANDS, name);
    if (!c) out = `unknown command: '${name}'\n`;
    else if (!c.args && rest.trim()) out = extraneous(c, name);
    else {
      try {
        out = c.run(d, rest);
      } catch (err) {
        if (!(err instanceof QmpError)) throw err;
        out = `Error: ${err.desc}\n`;
      }
    }
  }
  return out.replace(/\n/g, '\r\n');
}
