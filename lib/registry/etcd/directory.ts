// directory.ts — the endpoint directory kept in etcd.
//
// Each endpoint bound on a node is the key /dvs/<ns>/eps/<dc>/<ep> =
// {"node","inc","gen","pid"[,"name"]} on that node's lease (inc: the node
// agent's incarnation), so a node's endpoints vanish with it. Every agent
// watches the prefix and installs each other node's list in its data plane
// (host.apply, per node, on every change).
//
// Writing this node's endpoints is a reconciliation of what is bound here
// against what etcd holds, one compare-and-swap transaction per key:
//  - a key that is absent: create-if-absent (a bind);
//  - a key of this node with another value (a rebind, or a key left by this
//    node's previous incarnation): swap iff its mod revision is the one we
//    saw, i.e. compare-and-swap on the incarnation that holds it;
//  - a key held by another node: not overwritten; logged as a conflict
//    (conflicts()), and claimed when that key goes;
//  - a key of this node no longer bound here: deleted, iff unchanged.
// A transaction that loses a race re-reads the key and the pass starts again.
// While etcd is unreachable nothing is cleared: the data plane keeps the last
// known directory; after reconnection the session's fresh snapshot replaces
// it and the reconciliation writes what changed meanwhile.
import type { Directory, DirectoryEntry, DirectoryHost } from '../../directory/directory.js';
import { isName, MAX_DC, MAX_EP, MAX_NODE } from '../../validate.js';
import { errText, parseObject, type EtcdSession, type Kv, type KvChange, type LeaveOp, type SessionPart } from './session.js';

export interface EtcdDirectoryOptions {
  node: number;
  incarnation: number;
}

/** One endpoint key as known here. */
interface Rec {
  node: number;
  inc: number;
  entry: DirectoryEntry;
  raw: string;
  mod: number;
  lease: string;
}

export interface EndpointConflict {
  dc: number;
  ep: number;
  /** The node that holds the key. */
  node: number;
}

function parseKey(k: string): { dc: number; ep: number } | null {
  const m = /^(\d{1,4})\/(\d{1,8})$/.exec(k);
  if (!m) return null;
  const dc = Number(m[1]);
  const ep = Number(m[2]);
  return dc <= MAX_DC && ep <= MAX_EP ? { dc, ep } : null;
}

function parseRec(k: string, kv: Kv): Rec | null {
  const key = parseKey(k);
  if (!key) return null;
  const v = parseObject(kv.value);
  if (!v) return null;
  const { node, inc, gen, pid, name = '' } = v;
  if (!Number.isInteger(node) || (node as number) < 0 || (node as number) > MAX_NODE) return null;
  if (!Number.isSafeInteger(inc) || (inc as number) <= 0) return null;
  if (![gen, pid].every((x) => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 0xffffffff)) return null;
  if (!isName(name)) return null;
  const entry: DirectoryEntry = { dc: key.dc, ep: key.ep, gen: gen as number, pid: pid as number };
  if (name) entry.name = name;
  return { node: node as number, inc: inc as number, entry, raw: kv.value, mod: kv.mod, lease: kv.lease };
}

const byDcEp = (a: { dc: number; ep: number }, b: { dc: number; ep: number }): number => a.dc - b.dc || a.ep - b.ep;

export class EtcdDirectory implements Directory, SessionPart {
  readonly prefix = 'eps/';
  private readonly me: number;
  /** Every endpoint key ('dc/ep'), and the same per node. */
  private readonly all = new Map<string, Rec>();
  private readonly byNode = new Map<number, Map<string, Rec>>();
  /** What is bound on this node: key → value to store. */
  private desired = new Map<string, string>();
  private readonly conflicting = new Map<string, number>();
  private remoteCache: Map<number, DirectoryEntry[]> | null = null;
  private chain: Promise<void> = Promise.resolve();
  private queued = false;
  private stopped = false;
  private warnedReceive = false;

  constructor(
    private readonly session: EtcdSession,
    private readonly o: EtcdDirectoryOptions,
    private readonly host: DirectoryHost,
  ) {
    this.me = o.node;
    session.on('up', () => this.kick());
  }

  // ---- Directory ----

  localChanged(eps: DirectoryEntry[]): void {
    const d = new Map<string, string>();
    for (const e of eps) d.set(`${e.dc}/${e.ep}`, this.encode(e));
    this.desired = d;
    this.kick();
  }

  peerUp(_node: number): void {
    // Liveness and endpoints come from etcd, not from the links.
  }

  peerDown(_node: number): void {
    // Proxies stay: senders get EDVSNOTCONN while the link is down.
  }

  forget(node: number): void {
    if (node === this.me) return;
    const recs = this.byNode.get(node);
    if (!recs) return;
    for (const k of [...recs.keys()]) this.del(k);
  }

  receive(node: number, _msg: unknown): void {
    if (this.warnedReceive) return;
    this.warnedReceive = true;
    this.host.warn('a peer announces its endpoints over the transport, but this agent keeps the directory in etcd (do all agents use the same --registry?)', { peer: node });
  }

  remote(): ReadonlyMap<number, readonly DirectoryEntry[]> {
    if (!this.remoteCache) {
      this.remoteCache = new Map();
      for (const [n, recs] of this.byNode) if (n !== this.me && recs.size) this.remoteCache.set(n, [...recs.values()].map((r) => r.entry).sort(byDcEp));
    }
    return this.remoteCache;
  }

  /** Endpoints bound here whose key another node holds in etcd (not overwritten; claimed when it goes). */
  conflicts(): EndpointConflict[] {
    return [...this.conflicting].map(([k, node]) => ({ ...parseKey(k)!, node })).sort(byDcEp);
  }

  /** Stops writing (the session is stopped by the membership). */
  stop(): void {
    this.stopped = true;
  }

  // ---- SessionPart ----

  snapshot(kvs: Kv[]): void {
    const next = new Map<string, Rec>();
    for (const kv of kvs) {
      const r = parseRec(kv.key, kv);
      if (r) next.set(kv.key, r);
      else this.host.warn('malformed endpoint key in etcd ignored', { key: this.session.key(this.prefix + kv.key) });
    }
    const touched = new Set<number>();
    for (const [k, r] of this.all) if (next.get(k)?.raw !== r.raw) touched.add(r.node);
    for (const [k, r] of next) {
      if (this.all.get(k)?.raw !== r.raw) touched.add(r.node);
    }
    for (const k of [...this.all.keys()]) if (!next.has(k)) this.del(k);
    for (const [k, r] of next) this.set(k, r);
    this.applyNodes(touched);
  }

  changes(ch: KvChange[]): void {
    const touched = new Set<number>();
    let mine = false;
    for (const c of ch) {
      const old = this.all.get(c.key);
      if (c.type === 'put') {
        const r = parseRec(c.key, c.kv);
        if (!r) {
          this.host.warn('malformed endpoint key in etcd ignored', { key: this.session.key(this.prefix + c.key) });
          continue;
        }
        if (old && old.mod >= r.mod) continue;  // already known (from our own transaction's answer)
        this.set(c.key, r);
        if (old?.raw !== r.raw) {
          touched.add(r.node);
          if (old) touched.add(old.node);
        }
      } else {
        if (!old) continue;
        if (old.mod > c.kv.mod) continue;
        this.del(c.key);
        touched.add(old.node);
      }
      if (this.desired.has(c.key) || old?.node === this.me) mine = true;
    }
    this.applyNodes(touched);
    if (mine) this.kick();
  }

  /** After each (re)connection: write what is bound here (a failure ends the session's round). */
  sync(): Promise<void> {
    const p = this.chain.then(() => this.reconcile());
    this.chain = p.catch(() => {});
    return p;
  }

  leaveOps(): LeaveOp[] {
    return [...(this.byNode.get(this.me)?.keys() ?? [])].map((k) => ({ delete: this.prefix + k }));
  }

  // ----

  private encode(e: DirectoryEntry): string {
    return JSON.stringify(e.name ? { node: this.me, inc: this.o.incarnation, gen: e.gen, pid: e.pid, name: e.name } : { node: this.me, inc: this.o.incarnation, gen: e.gen, pid: e.pid });
  }

  private set(k: string, r: Rec): void {
    const old = this.all.get(k);
    if (old && old.node !== r.node) this.byNode.get(old.node)?.delete(k);
    this.all.set(k, r);
    let m = this.byNode.get(r.node);
    if (!m) this.byNode.set(r.node, (m = new Map()));
    m.set(k, r);
    this.remoteCache = null;
  }

  private del(k: string): void {
    const old = this.all.get(k);
    if (!old) return;
    this.all.delete(k);
    const m = this.byNode.get(old.node);
    m?.delete(k);
    if (m && !m.size) this.byNode.delete(old.node);
    this.remoteCache = null;
  }

  private applyNodes(nodes: Iterable<number>): void {
    for (const n of nodes) {
      if (n === this.me) continue;
      const eps = [...(this.byNode.get(n)?.values() ?? [])].map((r) => r.entry).sort(byDcEp);
      this.host.apply(n, eps);
    }
  }

  /** What etcd answered about a key after a lost race. */
  private learn(k: string, kv: Kv | null): void {
    const old = this.all.get(k);
    const r = kv ? parseRec(k, { ...kv, key: k }) : null;
    if (r) this.set(k, r);
    else this.del(k);
    const touched = new Set<number>();
    if (old) touched.add(old.node);
    if (r) touched.add(r.node);
    this.applyNodes(touched);
  }

  private kick(): void {
    if (this.stopped || this.queued || this.session.state !== 'up') return;
    this.queued = true;
    const round = this.session.currentRound;
    this.chain = this.chain
      .then(() => {
        this.queued = false;
        return this.reconcile();
      })
      .catch((e: unknown) => {
        this.queued = false;
        if (this.stopped || round !== this.session.currentRound) return;
        this.host.warn("etcd: writing this node's endpoints failed; resynchronising", { etcd: this.session.display, error: errText(e) });
        this.session.fail(`endpoint registration failed: ${errText(e)}`, round);
      });
  }

  private async reconcile(): Promise<void> {
    for (let pass = 0; pass < 20; pass++) {
      if (this.stopped || this.session.state === 'down' || this.session.state === 'stopped') return;
      let again = false;
      const lease = this.session.lease;
      for (const [k, raw] of this.desired) {
        const cur = this.all.get(k);
        if (cur && cur.node === this.me && cur.raw === raw && cur.lease === lease) {
          this.conflicting.delete(k);
          continue;
        }
        if (cur && cur.node !== this.me) {
          if (this.conflicting.get(k) !== cur.node) {
            this.conflicting.set(k, cur.node);
            this.host.warn('endpoint conflict: bound on this node, but etcd lists it on another node; not overwritten (registered when that key goes)', { dc: cur.entry.dc, ep: cur.entry.ep, holder: cur.node, holderPid: cur.entry.pid });
          }
          continue;
        }
        const r = await this.session.cas(this.prefix + k, cur ? cur.mod : 'absent', { value: raw, onLease: true });
        if (r.ok) {
          this.conflicting.delete(k);
          const rec = parseRec(k, { key: k, value: raw, mod: r.rev, lease });
          if (rec && (this.all.get(k)?.mod ?? 0) < r.rev) this.set(k, rec);
        } else {
          this.learn(k, r.cur);
          again = true;
        }
      }
      for (const [k, cur] of [...(this.byNode.get(this.me) ?? [])]) {
        if (this.desired.has(k)) continue;
        const r = await this.session.cas(this.prefix + k, cur.mod, 'delete');
        if (r.ok) {
          if (this.all.get(k) === cur) this.del(k);
        } else {
          this.learn(k, r.cur);
          again = true;
        }
      }
      for (const k of [...this.conflicting.keys()]) if (!this.desired.has(k)) this.conflicting.delete(k);
      if (!again) return;
    }
    throw new Error('endpoint keys keep changing under us');
  }
}
