/**
 * Checks a command's arguments the way QEMU's generated marshallers do (QObject input visitor):
 * members in declaration order, the first problem wins, and each problem is reported with
 * QEMU's text and QEMU's choice of name (the full path `a[0].b` for missing, unexpected and
 * mistyped members, the member's own name for enum and range errors). Returns the arguments as
 * plain JS values, with QEMU's coercions (negative numbers wrap for unsigned types).
 */
import { Errors } from '../errors.js';
import { QNum, qtypeName, type QObject } from './qobject.js';
import type { JsonSchema, Located, SchemaSet } from './schema.js';

const INT_RANGES: Record<string, [bigint, bigint, string]> = {
  int8: [-(2n ** 7n), 2n ** 7n - 1n, 'int8_t'],
  int16: [-(2n ** 15n), 2n ** 15n - 1n, 'int16_t'],
  int32: [-(2n ** 31n), 2n ** 31n - 1n, 'int32_t'],
  uint8: [0n, 2n ** 8n - 1n, 'uint8_t'],
  uint16: [0n, 2n ** 16n - 1n, 'uint16_t'],
  uint32: [0n, 2n ** 32n - 1n, 'uint32_t'],
};

export type Plain = null | boolean | string | number | bigint | Plain[] | { [k: string]: Plain };

export class QapiVisitor {
  constructor(private readonly schemas: SchemaSet) {}

  /** Visits `args` (always a dict: the dispatcher checked) against a command's argument schema. */
  visitArguments(schema: JsonSchema, module: string, args: Map<string, QObject>): { [k: string]: Plain } {
    return this.visit({ schema, module }, args, '', null) as { [k: string]: Plain };
  }

  private visit(node: Located, value: QObject, full: string, own: string | null): Plain {
    const { schema, module, name } = this.schemas.resolve(node);
    const here = (s: unknown): Located => ({ schema: s as JsonSchema, module });
    const shown = full || '<anonymous>';

    if (Array.isArray(schema.anyOf)) return this.visitAlternate(schema, module, name, value, full, own);
    if (Array.isArray(schema.enum)) {
      if (typeof value !== 'string') throw Errors.parameterType(shown, 'string');
      if (!(schema.enum as unknown[]).includes(value)) throw Errors.parameterEnum(own ?? 'null', value);
      return value;
    }
    switch (schema.type) {
      case 'object': {
        if (!(value instanceof Map)) throw Errors.parameterType(shown, 'object');
        const out: { [k: string]: Plain } = {};
        const seen = new Set<string>();
        const visitMembers = (s: JsonSchema): void => {
          const required = new Set((s.required as string[] | undefined) ?? []);
          for (const [member, memberSchema] of Object.entries((s.properties ?? {}) as Record<string, unknown>)) {
            seen.add(member);
            const memberFull = full ? `${full}.${member}` : member;
            const v = value.get(member);
            if (v === undefined) {
              if (required.has(member)) throw Errors.parameterMissing(memberFull);
              continue;
            }
            out[member] = this.visit(here(memberSchema), v, memberFull, member);
          }
          // A union's variant members follow its base's; a variant may itself be a union (10.0's
          // MigrationAddress has SocketAddress as its socket branch).
          const tag = s['x-union-tag'];
          if (typeof tag === 'string') {
            for (const branch of (s.allOf ?? []) as JsonSchema[]) {
              const cond = (branch.if as JsonSchema).properties as Record<string, { const: unknown }>;
              if (cond[tag]?.const === out[tag]) visitMembers(this.schemas.resolve(here(branch.then)).schema);
            }
          }
        };
        visitMembers(schema);
        for (const key of value.keys()) {
          if (!seen.has(key)) throw Errors.parameterUnexpected(full ? `${full}.${key}` : key);
        }
        return out;
      }
      case 'array': {
        if (!Array.isArray(value)) throw Errors.parameterType(shown, 'array');
        return value.map((item, i) => this.visit(here(schema.items), item, `${full}[${i}]`, null));
      }
      case 'string':
        if (typeof value !== 'string') throw Errors.parameterType(shown, 'string');
        return value;
      case 'boolean':
        if (typeof value !== 'boolean') throw Errors.parameterType(shown, 'boolean');
        return value;
      case 'null':
        if (value !== null) throw Errors.parameterType(shown, 'null');
        return null;
      case 'number':
        if (!(value instanceof QNum)) throw Errors.parameterType(shown, 'number');
        return value.toNumber();
      case 'integer':
        return this.visitInteger(String(schema['x-qapi-int'] ?? 'int64'), value, shown, own);
      case undefined:
        return toPlainValue(value); // 'any'
      default:
        throw new Error(`schema type ${String(schema.type)} is not a QAPI type`);
    }
  }

  private visitInteger(kind: string, value: QObject, shown: string, own: string | null): Plain {
    const unsigned = kind.startsWith('uint') || kind === 'size';
    let n: bigint;
    if (unsigned) {
      if (!(value instanceof QNum) || value.kind === 'double') throw Errors.parameterExpects(shown, 'uint64');
      n = BigInt(value.value);
      if (n < 0n) n += 2n ** 64n; // QEMU accepts negative numbers here and wraps them
    } else {
      if (!(value instanceof QNum) || value.kind !== 'int') throw Errors.parameterType(shown, 'integer');
      n = BigInt(value.value);
    }
    const range = INT_RANGES[kind];
    if (range && (n < range[0] || n > range[1])) throw Errors.parameterValue(own ?? 'null', range[2]);
    return Number.isSafeInteger(Number(n)) ? Number(n) : n;
  }

  private visitAlternate(schema: JsonSchema, module: string, name: string | undefined, value: QObject, full: string, own: string | null): Plain {
    const want = qtypeName(value);
    for (const branch of schema.anyOf as JsonSchema[]) {
      const b = this.schemas.resolve({ schema: branch, module }).schema;
      const accepts =
        Array.isArray(b.enum) ? 'string'
        : b.type === 'object' ? 'dict'
        : b.type === 'array' ? 'list'
        : b.type === 'integer' || b.type === 'number' ? 'number'
        : b.type === 'boolean' ? 'bool'
        : b.type;
      if (accepts === want) return this.visit({ schema: branch, module }, value, full, own);
    }
    throw Errors.parameterType(full || '<anonymous>', String(schema['x-qapi-name'] ?? name ?? 'alternate'));
  }
}

function toPlainValue(v: QObject): Plain {
  if (v instanceof QNum) return typeof v.value === 'bigint' ? v.value : v.value;
  if (Array.isArray(v)) return v.map(toPlainValue);
  // fromEntries defines own properties, so a "__proto__" key stays data.
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [k, toPlainValue(x)]));
  return v;
}
