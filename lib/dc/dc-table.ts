// dc-table.ts — which nodes each DC spans: the interface the agent uses, so
// that the embedded table (replicated over CONTROL frames) and the etcd one
// are interchangeable. A DC that is not in the table is "open": every node may
// use it. A DC in the table may be used only on its nodes (EDVSNODCNODE
// elsewhere; the engine enforces it, see NativeEngine.setDcs).
import { TypedEmitter } from '../membership/membership.js';

export interface DcInfo {
  dc: number;
  /** Sorted, distinct. */
  nodes: number[];
  /** Increases with every change of this DC (0: from the agents' configuration). */
  version: number;
}

export type DcEvents = { change: [DcInfo[]] };

export interface DcTable extends TypedEmitter<DcEvents> {
  start(): Promise<void>;
  stop(): void;
  /** Sorted by dc. */
  list(): DcInfo[];
  /** A new DC spanning `nodes`; one that exists → DvsError EDVSSLOTUSED. */
  create(dc: number, nodes: number[]): Promise<DcInfo>;
  /** Unknown dc → EDVSBADDCID; a node already in it → unchanged. */
  addNode(dc: number, node: number): Promise<DcInfo>;
  /** Unknown dc → EDVSBADDCID; the node still has endpoints bound in the DC → EDVSBUSY; not in it → unchanged. */
  removeNode(dc: number, node: number): Promise<DcInfo>;
  /** Embedded only: a {k:'dc'} CONTROL message from a peer's agent. */
  receive?(node: number, msg: unknown): void;
  /** Embedded only: the link to a peer came up (send it the table). */
  peerUp?(node: number): void;
}

/** What a DC table needs from its agent. */
export interface DcHost {
  /** Sends a control message to a peer's agent. */
  send(node: number, msg: object): void;
  /** Peers whose link is up. */
  peersUp(): number[];
  /** Endpoints bound in `dc` on `node`, as this agent knows them (its own table, the directory). */
  boundIn(dc: number, node: number): number;
  warn(msg: string, fields?: Record<string, unknown>): void;
}
