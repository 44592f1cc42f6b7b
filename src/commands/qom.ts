/**
 * QAPI modules "qom" and "qdev": the QOM types qmigd has (its accelerator, its machine types and
 * memory backends, and their ancestors) and the QOM tree of its machine, answered from what QEMU
 * 7.2 says of them (qemu-data.ts). Only what is listed can be asked about, and everything listed
 * can: a child in a listing is shown only where qmigd has that path too.
 */
import type { Daemon } from '../daemon/context.js';
import { Errors } from '../errors.js';
import { qemuData, type QomTypeInfo } from './qemu-data.js';

/** Whether `type` is `ancestor` or descends from it. */
function implementsType(types: Map<string, QomTypeInfo>, type: string, ancestor: string): boolean {
  for (let t: string | undefined = type; t; t = types.get(t)?.parent) if (t === ancestor) return true;
  return false;
}

export function registerQom(d: Daemon): void {
  const types = (): Map<string, QomTypeInfo> => new Map(qemuData.qomTypes().map((t) => [t.name, t]));

  d.registry.register('qom-list-types', (a: { implements?: string; abstract?: boolean }) => {
    const all = types();
    return [...all.values()]
      .filter((t) => (a.abstract ?? false) || !t.abstract)
      .filter((t) => a.implements === undefined || implementsType(all, t.name, a.implements));
  });

  d.registry.register('qom-list-properties', (a: { typename: string }) => {
    const props = qemuData.qomProperties()[a.typename];
    if (!props) throw Errors.classNotFound(a.typename);
    return props;
  });

  // None of qmigd's types is a device: as QEMU says of a memory backend or a machine.
  d.registry.register('device-list-properties', (a: { typename: string }) => {
    if (types().has(a.typename)) throw Errors.notADeviceType();
    throw Errors.deviceNotFound(a.typename);
  });

  d.registry.register('qom-list', (a: { path: string }) => {
    const tree = qemuData.qomPaths()[d.config.machine] ?? qemuData.qomPaths().none!;
    const path = a.path.length > 1 ? a.path.replace(/\/$/, '') : a.path;
    const props = tree[path];
    if (!props) throw Errors.deviceNotFound(a.path);
    const child = (name: string): string => (path === '/' ? `/${name}` : `${path}/${name}`);
    return props.filter((p) => !p.type.startsWith('child<') || child(p.name) in tree);
  });
}
