/**
 * Loads schema/*.json once at start-up: ajv compiles every command's argument and return schema
 * and every event's data schema (a broken schema stops the daemon before it serves anything),
 * and $refs are resolved for the QAPI visitor and for introspection.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';

export type JsonSchema = { [key: string]: unknown };

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

export const SCHEMA_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'schema');

export class SchemaSet {
  readonly commands = new Map<string, CommandSchema>();
  readonly events = new Map<string, EventSchema>();
  private readonly modules = new Map<string, JsonSchema>();
  private readonly ajv = new Ajv2020({ allErrors: false, strict: true, strictTuples: false });

  constructor(dir = SCHEMA_DIR) {
    this.ajv.addVocabulary(['commands', 'events', 'x-qapi-int', 'x-features', 'x-allow-oob', 'x-union-tag', 'x-qapi-name', 'x-qmigd-test-hook']);
    const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
    for (const file of files) {
      const doc = JSON.parse(readFileSync(join(dir, file), 'utf8')) as JsonSchema;
      const id = String(doc.$id);
      this.modules.set(id, doc);
      this.ajv.addSchema(doc);
    }
    for (const [id, doc] of this.modules) {
      const module = String(doc.title);
      const commands = (doc.commands ?? {}) as Record<string, JsonSchema>;
      for (const [name, c] of Object.entries(commands)) {
        const pointer = `${id}#/commands/${escapePointer(name)}`;
        this.commands.set(name, {
          name,
          module,
          arguments: c.arguments as JsonSchema,
          returns: c.returns as JsonSchema,
          allowOob: c['x-allow-oob'] === true,
          features: (c['x-features'] as string[] | undefined) ?? [],
          testHook: c['x-qmigd-test-hook'] === true,
          validateArguments: this.ajv.compile({ $ref: `${pointer}/arguments` }),
          validateReturn: this.ajv.compile({ $ref: `${pointer}/returns` }),
        });
      }
      const events = (doc.events ?? {}) as Record<string, JsonSchema>;
      for (const [name, e] of Object.entries(events)) {
        this.events.set(name, {
          name,
          module,
          data: e.data as JsonSchema,
          validateData: this.ajv.compile({ $ref: `${id}#/events/${escapePointer(name)}/data` }),
        });
      }
    }
  }

  describeErrors(validate: ValidateFunction): string {
    return this.ajv.errorsText(validate.errors, { dataVar: 'value' });
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

function escapePointer(s: string): string {
  return s.replace(/~/g, '~0').replace(/\//g, '~1');
}

function unescapePointer(s: string): string {
  return s.replace(/~1/g, '/').replace(/~0/g, '~');
}
