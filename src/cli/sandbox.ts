/**
 * QEMU's -sandbox option, `on|off[,obsolete=…][,elevateprivileges=…][,spawn=allow|deny][,resourcecontrol=…]`,
 * as qemu-seccomp.c parses it: the first value is `enable`, and nothing is confined unless it is
 * on. qmigd honours `spawn`, the one that concerns what it does (exec: migration runs a shell);
 * the others have nothing to confine here and are only checked.
 */
export interface Sandbox {
  /** exec: migration URIs (a shell command) are refused. */
  spawnDenied: boolean;
}

export const NO_SANDBOX: Sandbox = { spawnDenied: false };

const CHOICES: Record<string, string[]> = {
  obsolete: ['allow', 'deny'],
  elevateprivileges: ['allow', 'deny', 'children'],
  spawn: ['allow', 'deny'],
  resourcecontrol: ['allow', 'deny'],
};

const BOOL: Record<string, boolean> = { on: true, yes: true, true: true, off: false, no: false, false: false };

/** Throws an Error with QEMU's text for a bad option string. */
export function parseSandbox(text: string): Sandbox {
  let enabled = false;
  let spawn = 'allow';
  text.split(',').forEach((part, i) => {
    const eq = part.indexOf('=');
    const [key, value] = eq < 0 ? (i === 0 ? ['enable', part] : [part, 'on']) : [part.slice(0, eq), part.slice(eq + 1)];
    if (key === 'enable') {
      if (!(value in BOOL)) throw new Error(`Parameter 'enable' expects 'on' or 'off'`);
      enabled = BOOL[value]!;
      return;
    }
    const choices = CHOICES[key];
    if (!choices) throw new Error(`Invalid parameter '${key}'`);
    if (!choices.includes(value)) throw new Error(`invalid argument for ${key}`);
    if (key === 'spawn') spawn = value;
  });
  return { spawnDenied: enabled && spawn === 'deny' };
}
