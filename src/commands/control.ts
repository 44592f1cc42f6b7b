/** QAPI module "control" (and introspection): negotiation, version, command list, quit. */
import type { Daemon } from '../daemon/context.js';
import { Errors } from '../errors.js';
import { buildIntrospection } from '../qmp/introspect.js';
import { PreSerialized } from '../qmp/json-writer.js';

export function registerControl(d: Daemon): void {
  d.registry.register('qmp_capabilities', (args: { enable?: string[] }, { session }) => {
    if (session.negotiated) throw Errors.negotiationComplete();
    // Every QMPCapability value is offered by qmigd's monitors, so none is ever "not available".
    session.enterCommandMode(args.enable ?? []);
    return {};
  });

  d.registry.register('query-version', () => {
    const { major, minor, micro, package: pkg } = d.version;
    return { qemu: { major, minor, micro }, package: pkg };
  });

  // QEMU builds this list by prepending, so it comes out in reverse registration order.
  d.registry.register('query-commands', () => d.registry.names().reverse().map((name) => ({ name })));

  let schema: PreSerialized | undefined;
  d.registry.register('query-qmp-schema', () => {
    schema ??= new PreSerialized(buildIntrospection(d.registry.schemas, d.registry.names()) as never);
    return schema;
  });

  d.registry.register('quit', () => {
    // qmp_quit() only requests the shutdown: SHUTDOWN goes out first, then this reply.
    d.shutdown('host-qmp-quit');
    return {};
  });
}
