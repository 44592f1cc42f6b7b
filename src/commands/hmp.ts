/**
 * The human monitor behind `human-monitor-command`, printing as QEMU's HMP prints (lines end in
 * CRLF, as QEMU's monitor writes them). Only commands qmigd really implements are listed; each
 * runs the same code as its QMP twin. Command lines are read as QEMU 7.2 reads them
 * (monitor/hmp.c: monitor_parse_command, monitor_parse_arguments, help_cmd), so its error texts
 * come out the same.
 */
import type { Daemon } from '../daemon/context.js';
import { QmpError } from '../errors.js';
import { MIGRATION_COMMANDS, MIGRATION_INFO } from './hmp-migration.js';
import { contGuest, stopGuest } from './run-state.js';

/** The arguments monitor_parse_arguments() made of the line: options true, strings as read. */
export type HmpArgs = Record<string, string | boolean>;

export interface HmpCommand {
  /** QEMU's .name, aliases after '|': "stop|s" (error messages print it whole). */
  name: string;
  /** QEMU's .args_type: "detach:-d,uri:s" (-X an option, s a word, S the rest of the line, ? optional). */
  argsType: string;
  /** QEMU's .params, as help shows them. */
  params: string;
  help: string;
  run: (d: Daemon, args: HmpArgs) => string;
  /** Subcommands, as `info` has them. */
  sub?: HmpCommand[];
}

/** QEMU sorts both tables by name at start-up (sortcmdlist), so help lists them so. */
const byName = (table: HmpCommand[]): HmpCommand[] => [...table].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

const INFO: HmpCommand[] = byName([
  {
    name: 'name', argsType: '', params: '', help: 'show the current VM name',
    run: (d) => (d.config.name !== undefined ? `${d.config.name}\n` : ''),
  },
  {
    name: 'status', argsType: '', params: '', help: 'show the current VM status (running|paused)',
    run: (d) => {
      const s = d.guest.runState.state;
      return `VM status: ${d.guest.runState.running ? 'running' : 'paused'}${!d.guest.runState.running && s !== 'paused' ? ` (${s})` : ''}\n`;
    },
  },
  {
    name: 'version', argsType: '', params: '', help: 'show the version of QEMU',
    run: (d) => `${d.version.major}.${d.version.minor}.${d.version.micro}${d.version.package}\n`,
  },
  ...MIGRATION_INFO,
]);

const COMMANDS: HmpCommand[] = byName([
  { name: 'cont|c', argsType: '', params: '', help: 'resume emulation', run: (d) => (contGuest(d), '') },
  { name: 'help|?', argsType: 'name:S?', params: '[cmd]', help: 'show the help', run: (_d, a) => help(a.name as string | undefined) },
  {
    // hmp_info_help(): "info" alone lists the subcommands; with one, the subcommand runs.
    name: 'info', argsType: 'item:s?', params: '[subcommand]', help: 'show various information about the system state',
    run: () => help('info'), sub: INFO,
  },
  { name: 'quit|q', argsType: '', params: '', help: 'quit the emulator', run: (d) => (d.shutdown('host-qmp-quit'), '') },
  { name: 'stop|s', argsType: '', params: '', help: 'stop emulation', run: (d) => (stopGuest(d), '') },
  ...MIGRATION_COMMANDS,
]);

const find = (table: HmpCommand[], name: string): HmpCommand | undefined => table.find((c) => c.name.split('|').includes(name));

/** qemu_isspace(): C's isspace in the C locale, not JavaScript's \s. */
const SPACES = new Set([' ', '\t', '\n', '\v', '\f', '\r']);
const isSpace = (c: string | undefined): boolean => c !== undefined && SPACES.has(c);

/** The command line and a position in it. (A NUL in it is an ordinary character: QEMU's JSON
 * parser stores \u0000 as the two bytes C0 80, so its C strings never end early.) */
class Line {
  constructor(readonly text: string) {}
  /** The character at p; '' past the end. */
  at(p: number): string {
    return this.text[p] ?? '';
  }
  skipSpaces(p: number): number {
    while (isSpace(this.text[p])) p++;
    return p;
  }
  atEnd(p: number): boolean {
    return p >= this.text.length;
  }
}

/** QEMU's `char buf[1024]` for one argument: longer ones are cut to 1023 bytes. */
const ARG_BYTES = 1023;
const ESCAPES: Record<string, string> = { n: '\n', r: '\r', '\\': '\\', "'": "'", '"': '"' };

/**
 * get_str(): one word, or a double-quoted string with \n \r \\ \' \" escapes. An unknown escape
 * or a missing closing quote fails (QEMU says why on its stdout, not on the monitor).
 */
function getStr(line: Line, from: number): { value: string; end: number } | undefined {
  let p = line.skipSpaces(from);
  if (line.atEnd(p)) return undefined;
  let value = '';
  if (line.at(p) === '"') {
    p++;
    while (!line.atEnd(p) && line.at(p) !== '"') {
      if (line.at(p) === '\\') {
        const escaped = ESCAPES[line.at(p + 1)];
        if (escaped === undefined) return undefined;
        value += escaped;
        p += 2;
      } else value += line.at(p++);
    }
    if (line.atEnd(p)) return undefined;
    p++;
  } else {
    while (!line.atEnd(p) && !isSpace(line.at(p))) value += line.at(p++);
  }
  const bytes = Buffer.from(value, 'utf8');
  return { value: bytes.length > ARG_BYTES ? bytes.subarray(0, ARG_BYTES).toString('utf8') : value, end: p };
}

type Parsed<T> = { ok: T; end: number } | { error: string };

/** monitor_parse_arguments(): the rest of the line against the command's args_type. */
function parseArguments(cmd: HmpCommand, line: Line, from: number): Parsed<HmpArgs> {
  const args: HmpArgs = {};
  const specs = cmd.argsType ? cmd.argsType.split(',') : [];
  let p = from;
  for (const [i, spec] of specs.entries()) {
    const [key = '', type = ''] = spec.split(':');
    const optional = type.endsWith('?');
    const fail = (what: string): Parsed<HmpArgs> => ({ error: `${cmd.name}: ${what}\n` });
    switch (type[0]) {
      case '-': {
        // An option: "-X" sets it; an option of a later key is left for that key (so the
        // options must come in args_type's order); anything else is refused.
        const q = line.skipSpaces(p);
        if (line.at(q) !== '-') break;
        const c = line.at(q + 1);
        if (c === type[1]) {
          args[key] = true;
          p = q + 2;
          break;
        }
        // At the end of the line (c is '') QEMU's c is the string's NUL: is_valid_option() then
        // looks for a bare "-", and the message, printed with %c, stops at that NUL, newline and all.
        const later = `,${specs.slice(i + 1).join(',')}`;
        if (later.includes(`-${c}`)) break;
        return c ? fail(`unsupported option -${c}`) : { error: `${cmd.name}: unsupported option -` };
      }
      case 's': {
        p = line.skipSpaces(p);
        if (optional && line.atEnd(p)) break;
        const word = getStr(line, p);
        if (!word) return fail('string expected');
        args[key] = word.value;
        p = word.end;
        break;
      }
      case 'S': {
        // The whole rest of the line.
        p = line.skipSpaces(p);
        if (optional && line.atEnd(p)) break;
        if (line.atEnd(p)) return fail('string expected');
        args[key] = line.text.slice(p);
        p = line.text.length;
        break;
      }
      default:
        throw new Error(`HMP args_type ${spec} of ${cmd.name} is not supported`);
    }
  }
  p = line.skipSpaces(p);
  if (!line.atEnd(p)) return { error: `${cmd.name}: extraneous characters at the end of line\n` };
  return { ok: args, end: p };
}

/**
 * monitor_parse_command(): the command name ends at a space or '/'; a command with subcommands
 * takes the next word from its table. Messages quote the line from its very start.
 */
function parseCommand(line: Line, from: number, table: HmpCommand[]): Parsed<HmpCommand> | undefined {
  let p = line.skipSpaces(from);
  if (line.atEnd(p)) return undefined;
  const start = p;
  while (!line.atEnd(p) && line.at(p) !== '/' && !isSpace(line.at(p))) p++;
  const cmd = find(table, line.text.slice(start, p));
  if (!cmd) return { error: `unknown command: '${line.text.slice(0, p)}'\n` };
  p = line.skipSpaces(p);
  if (cmd.sub && !line.atEnd(p)) return parseCommand(line, p, cmd.sub);
  return { ok: cmd, end: p };
}

/** help_cmd() and help_cmd_dump(): the words (read as get_str reads them) walk the tables. */
function help(topic: string | undefined): string {
  const line = new Line(topic ?? '');
  const words: string[] = [];
  for (let p = line.skipSpaces(0); !line.atEnd(p); p = line.skipSpaces(p)) {
    const word = getStr(line, p);
    // parse_cmdline() fails on a bad word, or past MAX_ARGS (16) words: help prints nothing.
    if (!word || words.length === 16) return '';
    words.push(word.value);
    p = word.end;
  }
  return helpDump(COMMANDS, words, 0);
}

function helpDump(table: HmpCommand[], words: string[], index: number): string {
  const prefix = words.slice(0, index).map((w) => `${w} `).join('');
  const helpLine = (c: HmpCommand): string => `${prefix}${c.name} ${c.params} -- ${c.help}\n`;
  if (index >= words.length) return table.map(helpLine).join('');
  const c = find(table, words[index]!);
  if (!c) return `unknown command: '${words.slice(0, index + 1).join(' ')}'\n`;
  return c.sub ? helpDump(c.sub, words, index + 1) : helpLine(c);
}

/** handle_hmp_command(): a bad line says what it expected and points at the command's help. */
function handleCommand(d: Daemon, line: Line): string {
  const parsed = parseCommand(line, 0, COMMANDS);
  if (!parsed) return '';
  if ('error' in parsed) return parsed.error;
  const args = parseArguments(parsed.ok, line, parsed.end);
  if ('error' in args) {
    let end = parsed.end;
    while (end > 0 && isSpace(line.at(end - 1))) end--;
    return `${args.error}Try "help ${line.text.slice(0, end)}" for more information\n`;
  }
  try {
    return parsed.ok.run(d, args.ok);
  } catch (err) {
    // hmp_handle_error()
    if (!(err instanceof QmpError)) throw err;
    return `Error: ${err.desc}\n`;
  }
}

/** Runs one HMP command line; QMP errors come back as HMP prints them ("Error: ..."). */
export function runHmp(d: Daemon, commandLine: string): string {
  return handleCommand(d, new Line(commandLine)).replace(/\n/g, '\r\n');
}
