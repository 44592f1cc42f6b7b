/**
 * Loads schema/*.json once at start-up, with every command's argument and return validator and
 * every event's data validator (compiled at build time: schema-validators.ts); $refs are
 * resolved for the QAPI visitor and for introspection.
 */
import type { ValidateFunction } from 'ajv';
import { activeProfile, type QemuProfile } from '../profiles/index.js';
import { readSchemaFiles, loadValidators, SCHEMA_DIR, type JsonSchema } from './schema-validators.js';

export { SCHEMA_DIR, type JsonSchema };

export interface CommandSchema {
  name: string;
  module: string;
  arguments: JsonSchema;
  returns: JsonSchema;
  allowOob: boolean;
  features: string[];
  /** A downstream command that breaks the daemon on purpose: served only when asked for. */
  testHook: boolean;
  validateArguments: ValidateFunction;
  validateReturn: ValidateFunction;
}

export interface EventSchema {
  name: string;
  module: string;
  data: JsonSchema;
  validateData: ValidateFunction;
}

/** A schema node together with the module its relative $refs resolve against. */
export interface Located {
  schema: JsonSchema;
  module: string;
  /** The QAPI type name when the node is a named definition. */
  name?: string;
}

export class SchemaSet {
  readonly commands = new Map<string, CommandSchema>();
  readonly events = new Map<string, EventSchema>();
  private readonly modules: Map<string, JsonSchema>;

  /** The schema of `profile` (the process's own unless given), from `dir`. */
  constructor(dir = SCHEMA_DIR, profile: QemuProfile = activeProfile()) {
    const files = readSchemaFiles(dir, profile.schemaOverlay);
    this.modules = files.modules;
    const validators = loadValidators(files, profile);
    for (const doc of this.modules.values()) {
      const module = String(doc.title);
      const commands = (doc.commands ?? {}) as Record<string, JsonSchema>;
      for (const [name, c] of Object.entries(commands)) {
        this.commands.set(name, {
          name,
          module,
          arguments: c.arguments as JsonSchema,
          returns: c.returns as JsonSchema,
          allowOob: c['x-allow-oob'] === true,
          features: (c['x-features'] as string[] | undefined) ?? [],
          testHook: c['x-qmigd-test-hook'] === true,
          validateArguments: validators.get(`c:${name}:arguments`)!,
          validateReturn: validators.get(`c:${name}:returns`)!,
        });
      }
      const events = (doc.events ?? {}) as Record<string, JsonSchema>;
      for (const [name, e] of Object.entries(events)) {
        this.events.set(name, { name, module, data: e.data as JsonSchema, validateData: validators.get(`e:${name}`)! });
      }
    }
  }

  /** What the last failed validation found, as ajv's errorsText() words it. */
  describeErrors(validate: ValidateFunction): string {
    return (validate.errors ?? []).map((e) => `value${e.instancePath} ${e.message ?? ''}`).join(', ') || 'No errors';
  }

  /** The module id of a command or event, for resolving the $refs in its schemas. */
  moduleId(title: string): string {
    for (const [id, doc] of this.modules) if (doc.title === title) return id;
    throw new Error(`no schema module ${title}`);
  }

  /** Follows $refs until a schema with content. */
  resolve(node: Located): Located {
    let cur = node;
    for (let hops = 0; typeof cur.schema.$ref === 'string'; hops++) {
      if (hops > 32) throw new Error(`$ref loop at ${String(cur.schema.$ref)}`);
      const ref = cur.schema.$ref as string;
      const [idPart, pointer = ''] = ref.split('#');
      const module = idPart ? idPart : cur.module;
      const doc = this.modules.get(module);
      if (!doc) throw new Error(`unknown schema module in $ref ${ref}`);
      let target: unknown = doc;
      const parts = pointer.split('/').filter(Boolean).map(unescapePointer);
      for (const p of parts) target = (target as JsonSchema)[p];
      if (!target || typeof target !== 'object') throw new Error(`dangling $ref ${ref}`);
      const name = parts.length === 2 && parts[0] === '$defs' ? parts[1] : undefined;
      cur = { schema: target as JsonSchema, module, name };
    }
    return cur;
  }
}

function unescapePointer(s: string): string {
  return s.replace(/~1/g, '/').replace(/~0/g, '~');
}
