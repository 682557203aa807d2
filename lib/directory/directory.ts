// directory.ts — where endpoints live: the interface the agent uses, so that
// the implementation (peer announcements today; membership-backed embedded and
// etcd directories later) can be swapped without touching the data plane.

/** An endpoint bound on some node. */
export interface DirectoryEntry {
  dc: number;
  ep: number;
  /** Its incarnation on that node. */
  gen: number;
  pid: number;
  /** The name given at bind (unique per DC on its node; at most 31 bytes of UTF-8, no NUL); absent or '' when none. */
  name?: string;
}

export interface Directory {
  /** This node's own bound endpoints (called when the endpoint table changed). */
  localChanged(eps: DirectoryEntry[]): void;
  /** The link to a peer came up (first contact, recovery, or a new incarnation). */
  peerUp(node: number): void;
  /** The link to a peer went down. */
  peerDown(node: number): void;
  /** The peer is dead or gone (membership): drop what is known about its endpoints. */
  forget(node: number): void;
  /** A directory message from a peer's agent. */
  receive(node: number, msg: unknown): void;
  /** What is known about each peer's endpoints. */
  remote(): ReadonlyMap<number, readonly DirectoryEntry[]>;
}

/** What a directory needs from its agent. */
export interface DirectoryHost {
  /** Sends a control message to a peer's agent (delivered in order, reliably, while the link is up). */
  send(node: number, msg: object): void;
  /** Installs a peer's endpoint list in the data plane (proxies in the arena). */
  apply(node: number, eps: readonly DirectoryEntry[]): void;
  /** Peers whose link is up. */
  peersUp(): number[];
  warn(msg: string, fields?: Record<string, unknown>): void;
}
