// membership.ts — cluster membership kept in etcd.
//
// Each agent holds a lease (TTL 2 s by default, kept alive by its session) and
// the key /dvs/<ns>/nodes/<id> = {"address":"ip:port","incarnation":N} on it.
// Every agent watches the prefix: a key that appears (or changes incarnation
// or address) is an 'alive' member, added as a transport peer (so the mesh
// forms); a key deleted by its lease's expiry is a 'dead' member (its
// endpoints leave the directory; the transport peer stays, so it can come
// back); a graceful leave replaces the key with a tombstone
// {"address","incarnation","left":true} on a short lease of its own and
// revokes the node's lease: 'left', and the transport peer goes. Every change
// makes a new view, numbered 1, 2, 3... on each agent.
//
// A restarted agent registers with a new incarnation: it replaces the key of
// its previous life (compare-and-swap on the key's revision) and revokes that
// life's lease, so the endpoint keys of the previous life go at once. A key
// with a higher incarnation than ours means another agent took this node id:
// we do not overwrite it (the round fails, logged, and is retried).
import type { Logger } from '../../agent/log.js';
import { DvsError } from '../../errors.js';
import type { EmbeddedHost } from '../../membership/embedded.js';
import { TypedEmitter, type Member, type MemberState, type Membership, type MembershipEvents, type View } from '../../membership/membership.js';
import { MAX_NODE } from '../../validate.js';
import { parseObject, type EtcdSession, type Kv, type KvChange, type LeaveOp, type SessionPart } from './session.js';

export interface EtcdMembershipOptions {
  node: number;
  host: string;
  port: number;
  incarnation: number;
}

/** The value of a node key. */
export interface NodeValue {
  address: string;
  incarnation: number;
  left?: true;
}

export function parseNodeValue(s: string): NodeValue | null {
  const v = parseObject(s);
  if (!v) return null;
  const { address, incarnation, left } = v;
  if (typeof address !== 'string' || !/^[0-9.]+:\d{1,5}$/.test(address)) return null;
  if (!Number.isSafeInteger(incarnation) || (incarnation as number) <= 0) return null;
  if (left !== undefined && left !== true) return null;
  return left ? { address, incarnation: incarnation as number, left } : { address, incarnation: incarnation as number };
}

export function parseNodeKey(k: string): number | null {
  if (!/^\d{1,4}$/.test(k)) return null;
  const n = Number(k);
  return n <= MAX_NODE ? n : null;
}

function splitAddress(a: string): { host: string; port: number } {
  const i = a.lastIndexOf(':');
  return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
}

export class EtcdMembership extends TypedEmitter<MembershipEvents> implements Membership, SessionPart {
  readonly prefix = 'nodes/';
  private readonly self: Member;
  private readonly value: string;
  private readonly members = new Map<number, Member>();
  private number = 1;
  private stopped = false;
  private readonly log: Logger;

  constructor(
    private readonly session: EtcdSession,
    o: EtcdMembershipOptions,
    private readonly host: EmbeddedHost,
  ) {
    super();
    this.log = host.log;
    this.self = { node: o.node, address: `${o.host}:${o.port}`, incarnation: o.incarnation, state: 'alive' };
    this.value = JSON.stringify({ address: this.self.address, incarnation: this.self.incarnation } satisfies NodeValue);
  }

  /** Connects to etcd (resolves after the first attempt; without etcd the agent runs and retries). */
  async start(): Promise<void> {
    this.log('info', 'view', { view: this.number, members: this.summary() });
    await this.session.start();
  }

  view(): View {
    const members = [this.self, ...this.members.values()].map((m) => ({ ...m })).sort((a, b) => a.node - b.node);
    return { number: this.number, members };
  }

  async leave(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const told = await this.session.leave();
    this.log('info', 'left the cluster', { etcd: this.session.display, told });
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.session.stop();
  }

  // ---- SessionPart ----

  /** Puts this node's key on the session's lease (create, or replace our previous life's). */
  async register(): Promise<void> {
    const rel = this.prefix + this.self.node;
    for (let i = 0; i < 5; i++) {
      const cur = await this.session.get(rel);
      const v = cur ? parseNodeValue(cur.value) : null;
      if (cur && v && !v.left && v.incarnation > this.self.incarnation)
        throw new DvsError('EDVSBADNODEID', `node ${this.self.node} is registered in etcd by another agent (${v.address}, incarnation ${v.incarnation} > ours ${this.self.incarnation})`);
      if (cur && cur.value === this.value && cur.lease === this.session.lease) return;
      const r = await this.session.cas(rel, cur ? cur.mod : 'absent', { value: this.value, onLease: true });
      if (!r.ok) continue;
      // Our previous life's lease: its endpoint keys go with it now rather than at its expiry.
      if (cur && v && v.incarnation < this.self.incarnation && cur.lease !== '0' && cur.lease !== this.session.lease) {
        this.log('info', 'replaced the registration of a previous incarnation of this node', { previous: v.incarnation, incarnation: this.self.incarnation });
        await this.session.client().leaseClient.leaseRevoke({ ID: cur.lease }).catch(() => {});
      }
      return;
    }
    throw new Error(`node key ${rel} keeps changing under us`);
  }

  snapshot(kvs: Kv[]): void {
    const seen = new Map<number, NodeValue>();
    for (const kv of kvs) {
      const node = parseNodeKey(kv.key);
      const v = parseNodeValue(kv.value);
      if (node === null || !v) {
        this.log('warn', 'malformed node key in etcd ignored', { key: this.session.key(this.prefix + kv.key) });
        continue;
      }
      if (node === this.self.node) continue;
      seen.set(node, v);
    }
    let changed = false;
    for (const [node, v] of seen) changed = this.upsert(node, v) || changed;
    // Gone while we were not watching: expired (dead), unless we knew it had left.
    for (const m of this.members.values()) if (!seen.has(m.node) && m.state === 'alive') changed = this.dead(m) || changed;
    if (changed) this.changed();
  }

  changes(ch: KvChange[]): void {
    let changed = false;
    for (const c of ch) {
      const node = parseNodeKey(c.key);
      if (node === null) continue;
      if (node === this.self.node) {
        this.own(c);
        continue;
      }
      if (c.type === 'put') {
        const v = parseNodeValue(c.kv.value);
        if (!v) {
          this.log('warn', 'malformed node key in etcd ignored', { key: this.session.key(this.prefix + c.key) });
          continue;
        }
        changed = this.upsert(node, v) || changed;
      } else {
        const m = this.members.get(node);
        if (m?.state === 'alive') changed = this.dead(m) || changed;
      }
    }
    if (changed) this.changed();
  }

  leaveOps(): LeaveOp[] {
    return [{ put: this.prefix + this.self.node, value: JSON.stringify({ address: this.self.address, incarnation: this.self.incarnation, left: true } satisfies NodeValue), tombstone: true }];
  }

  // ----

  /** A change of our own key: someone else's write, or its deletion (lease lost): register again. */
  private own(c: KvChange): void {
    if (this.stopped) return;
    if (c.type === 'delete') {
      this.session.fail("this node's key vanished from etcd (lease expired or revoked)");
      return;
    }
    const v = parseNodeValue(c.kv.value);
    if (c.kv.value === this.value) return;
    if (v && v.incarnation > this.self.incarnation) {
      this.log('error', 'another agent registered this node id in etcd with a newer incarnation', { etcd: this.session.display, address: v.address, incarnation: v.incarnation, ours: this.self.incarnation });
    }
    this.session.fail("this node's key in etcd was overwritten");
  }

  private upsert(node: number, v: NodeValue): boolean {
    const state: MemberState = v.left ? 'left' : 'alive';
    const cur = this.members.get(node);
    if (cur && v.incarnation < cur.incarnation) return false;
    if (cur && cur.incarnation === v.incarnation && cur.address === v.address && cur.state === state) return false;
    if (cur && cur.state === 'left' && state === 'left' && cur.incarnation === v.incarnation) return false;
    const m: Member = cur ?? { node, address: v.address, incarnation: v.incarnation, state };
    Object.assign(m, { address: v.address, incarnation: v.incarnation, state });
    this.members.set(node, m);
    const a = splitAddress(v.address);
    if (state === 'alive') this.host.addPeer(node, a.host, a.port);
    else this.host.removePeer(node);
    return true;
  }

  private dead(m: Member): boolean {
    m.state = 'dead';
    this.host.forget(m.node);
    return true;
  }

  private summary(): string[] {
    return this.view().members.map((m) => `${m.node}:${m.state}`);
  }

  private changed(): void {
    this.number++;
    const v = this.view();
    this.log('info', 'view', { view: v.number, members: v.members.map((m) => `${m.node}:${m.state}`) });
    this.emit('view', v);
  }
}
