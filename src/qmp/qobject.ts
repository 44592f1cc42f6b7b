/**
 * QEMU's QObject model, as far as the wire can see it.
 *
 * QEMU keeps three kinds of JSON number (int64, uint64, double) and QMP's argument checks depend
 * on which one a token became (`1.0` is not an integer), so parsed numbers keep their kind in a
 * QNum. Dictionaries are Maps so that any key, `__proto__` included, is just data.
 */
export type QNumKind = 'int' | 'uint' | 'double';

export class QNum {
  constructor(
    readonly kind: QNumKind,
    readonly value: bigint | number,
  ) {}

  /** The value as a JS number (exact for |v| < 2^53). */
  toNumber(): number {
    return Number(this.value);
  }
}

export type QDict = Map<string, QObject>;
export type QObject = null | boolean | string | QNum | QObject[] | QDict;

export function isQDict(v: QObject | undefined): v is QDict {
  return v instanceof Map;
}

export function qtypeName(v: QObject): 'null' | 'bool' | 'string' | 'number' | 'list' | 'dict' {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'string') return 'string';
  if (v instanceof QNum) return 'number';
  if (Array.isArray(v)) return 'list';
  return 'dict';
}

/** Turns a QObject into plain JSON-ish JS (numbers as JS numbers); for handlers and logs. */
export function toPlain(v: QObject): unknown {
  if (v instanceof QNum) return v.toNumber();
  if (Array.isArray(v)) return v.map(toPlain);
  if (v instanceof Map) {
    const o: Record<string, unknown> = Object.create(null);
    for (const [k, x] of v) o[k] = toPlain(x);
    return o;
  }
  return v;
}
