// registry.ts — the one place where the agent picks its control-plane backend:
// who is in the cluster (Membership), where endpoints live (Directory) and
// which nodes each DC spans (DcTable).
//   config.registry unset, no seeds   → 'static': the --peers list, peer announcements, DC table over CONTROL
//   config.registry unset, seeds      → 'embedded': membership from the seeds, the same directory and DC table
//   config.registry 'etcd://h:p[,h:p]' → 'etcd': all three kept in etcd (lib/registry/etcd/)
import type { AgentConfig } from '../agent/config.js';
import type { Logger } from '../agent/log.js';
import type { DcHost, DcTable } from '../dc/dc-table.js';
import { EmbeddedDcTable } from '../dc/embedded.js';
import { AnnounceDirectory } from '../directory/announce.js';
import type { Directory, DirectoryHost } from '../directory/directory.js';
import { EmbeddedMembership, type EmbeddedHost } from '../membership/embedded.js';
import type { Membership } from '../membership/membership.js';

export type RegistryKind = 'static' | 'embedded' | 'etcd';

export interface Registry {
  kind: RegistryKind;
  /** null: static peers only (no view changes but the links'). */
  membership: Membership | null;
  directory: Directory;
  dcs: DcTable;
  /** Starts the backends (the control socket listens and the static peers are added by then). */
  start(): Promise<void>;
  /** Graceful stop: leaves the cluster (the engine still runs), stops the rest. */
  stop(): Promise<void>;
  /** At process exit: synchronous, no goodbyes. */
  stopNow(): void;
}

/** What the backends need from the agent. */
export interface RegistryContext {
  config: AgentConfig;
  node: number;
  /** The transport's address (with listen port 0: the port actually bound). */
  host: string;
  port: number;
  incarnation: number;
  /** Membership timing, defaults applied. */
  deadAfterMs: number;
  suspectMs: number;
  log: Logger;
  membershipHost: EmbeddedHost;
  directoryHost: DirectoryHost;
  dcHost: DcHost;
}

export function registryKind(config: AgentConfig): RegistryKind {
  const r = (config as { registry?: string }).registry;
  if (r !== undefined && r.startsWith('etcd://')) return 'etcd';
  return config.seeds ? 'embedded' : 'static';
}

export async function createRegistry(ctx: RegistryContext): Promise<Registry> {
  const kind = registryKind(ctx.config);
  // ---- etcd (lib/registry/etcd/) ----
  if (kind === 'etcd') return (await import('./etcd/index.js')).createEtcdRegistry(ctx);  // loads the etcd client only here
  // ---- static / embedded ----
  const cfg = ctx.config;
  const membership = cfg.seeds
    ? new EmbeddedMembership(
        {
          node: ctx.node,
          host: ctx.host,
          port: ctx.port,
          incarnation: ctx.incarnation,
          seeds: [...cfg.seeds, ...cfg.peers],
          deadAfterMs: ctx.deadAfterMs,
          suspectMs: ctx.suspectMs,
        },
        ctx.membershipHost,
      )
    : null;
  const directory = new AnnounceDirectory(ctx.directoryHost);
  const dcs = new EmbeddedDcTable(ctx.node, cfg.dcs ?? [], ctx.dcHost);
  return {
    kind,
    membership,
    directory,
    dcs,
    async start() {
      await membership?.start();
      await dcs.start();
    },
    async stop() {
      await membership?.leave();
      dcs.stop();
    },
    stopNow() {
      membership?.stop();
      dcs.stop();
    },
  };
}
