/**
 * query-qmp-schema, generated from schema/ in QEMU's introspection format (qapi/introspect.json):
 * commands and events first, then every type they reach, non-builtin types named by number in
 * order of first use as QEMU's generator masks them, arrays as "[ELEMENT]".
 */
import type { JsonSchema, Located, SchemaSet } from './schema.js';

type Info = Record<string, unknown>;

const BUILTIN_JSON_TYPE: Record<string, string> = {
  str: 'string', int: 'int', bool: 'boolean', number: 'number', null: 'null', any: 'value',
};

export function buildIntrospection(schemas: SchemaSet, commandNames: string[]): Info[] {
  const entities: Info[] = [];
  const types: Info[] = [];
  const names = new Map<JsonSchema, string>();
  const builtins = new Set<string>();
  let next = 0;

  const typeName = (node: Located): string => {
    const { schema, module } = schemas.resolve(node);
    const builtin = builtinName(schema);
    if (builtin) {
      if (!builtins.has(builtin)) {
        builtins.add(builtin);
        types.push({ name: builtin, 'meta-type': 'builtin', 'json-type': BUILTIN_JSON_TYPE[builtin] });
      }
      return builtin;
    }
    if (schema.type === 'array') {
      const element = typeName({ schema: schema.items as JsonSchema, module });
      const name = `[${element}]`;
      if (!names.has(schema)) {
        names.set(schema, name);
        if (!types.some((t) => t.name === name)) types.push({ name, 'meta-type': 'array', 'element-type': element });
      }
      return name;
    }
    const known = names.get(schema);
    if (known !== undefined) return known;
    const name = String(next++);
    names.set(schema, name);
    const info: Info = { name };
    types.push(info); // reserve the slot before recursing, as members may refer back
    const features = schema['x-features'] as string[] | undefined;
    if (Array.isArray(schema.enum)) {
      info['meta-type'] = 'enum';
      info.members = (schema.enum as string[]).map((v) => ({ name: v }));
      info.values = [...(schema.enum as string[])];
    } else if (Array.isArray(schema.anyOf)) {
      info['meta-type'] = 'alternate';
      info.members = (schema.anyOf as JsonSchema[]).map((b) => ({ type: typeName({ schema: b, module }) }));
    } else {
      info['meta-type'] = 'object';
      info.members = objectMembers(schema, module);
      const tag = schema['x-union-tag'];
      if (typeof tag === 'string') {
        info.tag = tag;
        info.variants = ((schema.allOf ?? []) as JsonSchema[]).map((branch) => {
          const cond = (branch.if as JsonSchema).properties as Record<string, { const: string }>;
          return { case: cond[tag]!.const, type: typeName({ schema: branch.then as JsonSchema, module }) };
        });
      }
    }
    if (features?.length) info.features = features;
    return name;
  };

  const objectMembers = (schema: JsonSchema, module: string): Info[] => {
    const required = new Set((schema.required as string[] | undefined) ?? []);
    return Object.entries((schema.properties ?? {}) as Record<string, JsonSchema>).map(([member, s]) => {
      const m: Info = { name: member };
      if (!required.has(member)) m.default = null;
      m.type = typeName({ schema: s, module });
      const features = s['x-features'] as string[] | undefined;
      if (features?.length) m.features = features;
      return m;
    });
  };

  // QEMU reserves "0" for the empty object that argument-less commands and events share.
  const empty = schemas.resolve({ schema: { $ref: 'qmigd:common#/$defs/Empty' }, module: 'qmigd:common' });
  typeName(empty);

  for (const name of commandNames) {
    const c = schemas.commands.get(name)!;
    const module = schemas.moduleId(c.module);
    const info: Info = {
      name,
      'meta-type': 'command',
      'arg-type': typeName({ schema: c.arguments, module }),
      'ret-type': typeName({ schema: c.returns, module }),
    };
    if (c.allowOob) info['allow-oob'] = true;
    if (c.features.length) info.features = c.features;
    entities.push(info);
  }
  for (const e of schemas.events.values()) {
    entities.push({ name: e.name, 'meta-type': 'event', 'arg-type': typeName({ schema: e.data, module: schemas.moduleId(e.module) }) });
  }
  return [...entities, ...types];
}

function builtinName(schema: JsonSchema): string | undefined {
  if (Array.isArray(schema.enum) || Array.isArray(schema.anyOf)) return undefined;
  switch (schema.type) {
    case 'string': return 'str';
    case 'integer': return 'int';
    case 'boolean': return 'bool';
    case 'number': return 'number';
    case 'null': return 'null';
    case undefined: return schema.properties === undefined && schema.$ref === undefined ? 'any' : undefined;
    default: return undefined;
  }
}
