// index.ts — the etcd registry (`--registry etcd://host:port[,host:port]`):
// membership, endpoint directory and DC table kept in etcd, over one session
// (one lease, one watch) per agent. Loaded only by agents that use it.
import { defaultNamespace } from '../../agent/control.js';
import type { Registry, RegistryContext } from '../registry.js';
import { EtcdDcTable } from './dc-table.js';
import { EtcdDirectory } from './directory.js';
import { EtcdMembership } from './membership.js';
import { EtcdSession, type EtcdSessionOptions } from './session.js';
import { parseEtcdUrl } from './url.js';

export { EtcdDcTable } from './dc-table.js';
export { EtcdDirectory, type EndpointConflict } from './directory.js';
export { EtcdMembership } from './membership.js';
export { EtcdSession, type EtcdSessionOptions } from './session.js';
export { parseEtcdUrl, type EtcdUrl } from './url.js';

export interface EtcdRegistry extends Registry {
  kind: 'etcd';
  session: EtcdSession;
  membership: EtcdMembership;
  directory: EtcdDirectory;
  dcs: EtcdDcTable;
}

/** The etcd backends for one agent (not started). `tuning` overrides session timing (tests). */
export function createEtcdRegistry(ctx: RegistryContext, tuning: Partial<EtcdSessionOptions> = {}): EtcdRegistry {
  const url = parseEtcdUrl(ctx.config.registry ?? '');
  const session = new EtcdSession({ endpoints: url.endpoints, namespace: defaultNamespace(ctx.config.namespace), ttlSeconds: url.ttlSeconds, ...tuning }, ctx.log);
  const membership = new EtcdMembership(session, { node: ctx.node, host: ctx.host, port: ctx.port, incarnation: ctx.incarnation }, ctx.membershipHost);
  const directory = new EtcdDirectory(session, { node: ctx.node, incarnation: ctx.incarnation }, ctx.directoryHost);
  const dcs = new EtcdDcTable(session, ctx.config.dcs ?? [], ctx.dcHost);
  // Snapshot order: the DC table, then the nodes (transport peers), then their endpoints.
  session.add(dcs);
  session.add(membership);
  session.add(directory);
  return {
    kind: 'etcd',
    session,
    membership,
    directory,
    dcs,
    async start() {
      await membership.start();
      await dcs.start();
    },
    async stop() {
      directory.stop();
      dcs.stop();
      await membership.leave();
    },
    stopNow() {
      directory.stop();
      dcs.stop();
      membership.stop();
    },
  };
}
