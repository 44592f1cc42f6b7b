/**
 * QEMU's option strings (util/qemu-option.c): `key=value,key2=value2`, where `,,` is a comma
 * inside a value; a first element without `=` is the option's implied key (`-machine pc` is
 * `type=pc`); a later bare `key` is `key=on`. `-object` also takes JSON (`{"qom-type": ...}`),
 * as libvirt writes it when QEMU supports that.
 */
export type Opts = Map<string, string>;

export class OptsError extends Error {}

/** Parses `text`; `implied` names the key of a leading bare value, if the option has one. */
export function parseOpts(text: string, implied?: string): Opts {
  const opts: Opts = new Map();
  let i = 0;
  let first = true;
  while (i <= text.length) {
    // One element: up to a single comma (",," is a comma of the element).
    let element = '';
    while (i < text.length) {
      if (text[i] === ',') {
        if (text[i + 1] !== ',') break;
        i++;
      }
      element += text[i++];
    }
    i++;
    const eq = element.indexOf('=');
    if (eq >= 0) opts.set(element.slice(0, eq), element.slice(eq + 1));
    else if (first && implied !== undefined) opts.set(implied, element);
    else if (element !== '') opts.set(element, 'on');
    first = false;
  }
  return opts;
}

/** -object: JSON when it starts with `{`, else an option string whose implied key is qom-type. */
export function parseObject(text: string): Opts {
  if (!text.trimStart().startsWith('{')) return parseOpts(text, 'qom-type');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new OptsError((err as Error).message);
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new OptsError('Invalid parameter type, expected: object');
  return new Map(Object.entries(parsed as Record<string, unknown>).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
}

/** A boolean option value, as QEMU's parse_option_bool reads it. */
export function optBool(name: string, value: string | undefined, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (['on', 'yes', 'true', 'y'].includes(value)) return true;
  if (['off', 'no', 'false', 'n'].includes(value)) return false;
  throw new OptsError(`Parameter '${name}' expects 'on' or 'off'`);
}

/**
 * qemu_strtosz_MiB(): a size whose default unit is MiB (-m 64), with QEMU's suffixes. Returns
 * bytes; throws with QEMU's text.
 */
export function sizeMiB(name: string, value: string): number {
  const m = /^(\d+(?:\.\d+)?)([bkKmMgGtTpPeE]?)$/.exec(value);
  const unit = m?.[2]?.toUpperCase() || 'M';
  const shift = { B: 0, K: 10, M: 20, G: 30, T: 40, P: 50, E: 60 }[unit];
  const bytes = m ? Number(m[1]) * 2 ** shift! : NaN;
  if (!Number.isFinite(bytes) || bytes >= 2 ** 64) {
    throw new OptsError(
      `Parameter '${name}' expects a non-negative number below 2^64\n` +
        'Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.',
    );
  }
  return Math.round(bytes);
}

/** A size in bytes unless suffixed (memory-backend size=67108864). */
export function sizeBytes(name: string, value: string): number {
  return /^\d+$/.test(value) ? Number(value) : sizeMiB(name, value);
}
