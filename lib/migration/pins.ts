// pins.ts — where the agent's data plane says an endpoint lives, while a
// migration moves it: a *pin* overrides the directory for one (dc, ep).
//
// The directory (announcements, or etcd) gives each node's list of endpoints;
// the agent installs them as proxies (engine.setRemote per node). During a
// migration the directory lags and may even contradict the migration: the
// source keeps listing the endpoint until its own commit, the destination
// lists it as soon as it adopted it, and with etcd the destination's key is
// only written once the source's is gone. A commit must not depend on when
// those arrive, so:
//  - at START every participant pins (dc, ep) to the source: another node's
//    listing of it is ignored;
//  - at COMMIT the pin moves to the destination: the destination's entry is
//    installed now (synthesized from the commit when its announcement has not
//    come yet), the source's listing is ignored — the proxy is repointed
//    explicitly, whatever the timing;
//  - after the commit the pin is released as soon as the directory agrees
//    (the destination lists it, nobody else does), or if the destination stops
//    listing it after having listed it, or when its node is forgotten, or
//    after RELEASE_AFTER_MS whatever happens (logged);
//  - a rollback drops the pin: the directory is the truth again.
// A pin to this node itself hides every other node's listing of the endpoint
// (it is bound here, or about to be: at the destination after adopt).
import type { DirectoryEntry } from '../directory/directory.js';

/** An unconfirmed pin (the directory never agreed) is dropped this long after its commit. */
export const RELEASE_AFTER_MS = 60_000;

interface Pin {
  node: number;
  gen: number;
  pid: number;
  name: string;
  /** While the migration runs: never released by the directory's state. */
  hold: boolean;
  /** The pinned node's own list has shown the endpoint. */
  confirmed: boolean;
  since: number;
}

const keyOf = (dc: number, ep: number): number => dc * 0x1000000 + ep;

export interface PinsHost {
  self: number;
  /** Installs a node's effective list (proxies + watchers). */
  apply(node: number, eps: DirectoryEntry[]): void;
  log(level: 'info' | 'warn' | 'debug', msg: string, fields?: Record<string, unknown>): void;
}

export class Pins {
  /** The directory's lists, as given. */
  private readonly raw = new Map<number, DirectoryEntry[]>();
  private readonly pins = new Map<number, Pin>();

  constructor(private readonly host: PinsHost) {}

  /** The directory's list for `node` changed (empty: gone). */
  set(node: number, eps: readonly DirectoryEntry[]): void {
    if (eps.length) this.raw.set(node, [...eps]);
    else this.raw.delete(node);
    const touched = new Set<number>([node]);
    this.settle(touched);
    for (const n of touched) this.push(n);
  }

  /** The node is dead or gone. */
  forget(node: number): void {
    this.raw.delete(node);
    const touched = new Set<number>([node]);
    for (const [k, p] of this.pins)
      if (p.node === node) {
        this.pins.delete(k);
        for (const n of this.listing(k)) touched.add(n);
      }
    this.settle(touched);
    for (const n of touched) if (n !== node) this.push(n);
  }

  /** Pins (dc, ep) to `node` (possibly this node). The new node's list is installed before the old one's. */
  pin(dc: number, ep: number, node: number, gen: number, pid: number, name: string, hold: boolean): void {
    const k = keyOf(dc, ep);
    const old = this.pins.get(k);
    const confirmed = node === this.host.self || (this.raw.get(node)?.some((e) => e.dc === dc && e.ep === ep) ?? false);
    this.pins.set(k, { node, gen, pid, name, hold, confirmed, since: Date.now() });
    const order = [node, ...(old && old.node !== node ? [old.node] : []), ...this.listing(k)];
    for (const n of new Set(order)) this.push(n);
  }

  /** The migration is over (committed): the pin may go once the directory agrees. */
  release(dc: number, ep: number): void {
    const p = this.pins.get(keyOf(dc, ep));
    if (!p) return;
    p.hold = false;
    p.since = Date.now();
    const touched = new Set<number>();
    this.settle(touched);
    for (const n of touched) this.push(n);
  }

  /** Drops the pin (rollback): the directory decides again. */
  unpin(dc: number, ep: number): void {
    const k = keyOf(dc, ep);
    const p = this.pins.get(k);
    if (!p) return;
    this.pins.delete(k);
    for (const n of new Set([...this.listing(k), p.node])) this.push(n);
  }

  /** Periodic: drops pins whose commit is long past and that the directory never confirmed. */
  expire(now = Date.now()): void {
    const touched = new Set<number>();
    for (const [k, p] of this.pins) {
      if (p.hold || now - p.since < RELEASE_AFTER_MS) continue;
      this.host.log('warn', 'migration: the directory never confirmed a migrated endpoint; following the directory again', { dc: Math.floor(k / 0x1000000), ep: k % 0x1000000, node: p.node });
      this.pins.delete(k);
      touched.add(p.node);
      for (const n of this.listing(k)) touched.add(n);
    }
    for (const n of touched) this.push(n);
  }

  /** Where a pin puts (dc, ep), if any. */
  pinned(dc: number, ep: number): { node: number; gen: number; pid: number } | null {
    const p = this.pins.get(keyOf(dc, ep));
    return p ? { node: p.node, gen: p.gen, pid: p.pid } : null;
  }

  get size(): number {
    return this.pins.size;
  }

  /** What the data plane should hold for `node`. */
  effective(node: number): DirectoryEntry[] {
    const raw = this.raw.get(node) ?? [];
    if (!this.pins.size) return raw;
    const out: DirectoryEntry[] = [];
    for (const e of raw) {
      const p = this.pins.get(keyOf(e.dc, e.ep));
      if (!p || p.node === node) out.push(e);
    }
    if (node !== this.host.self)
      for (const [k, p] of this.pins) {
        if (p.node !== node) continue;
        const dc = Math.floor(k / 0x1000000);
        const ep = k % 0x1000000;
        if (raw.some((e) => e.dc === dc && e.ep === ep)) continue;
        out.push(p.name ? { dc, ep, gen: p.gen, pid: p.pid, name: p.name } : { dc, ep, gen: p.gen, pid: p.pid });
      }
    return out.length === raw.length ? out : out.sort((a, b) => a.dc - b.dc || a.ep - b.ep);
  }

  /** Nodes whose raw list has the key. */
  private listing(k: number): number[] {
    const out: number[] = [];
    for (const [n, eps] of this.raw) if (eps.some((e) => keyOf(e.dc, e.ep) === k)) out.push(n);
    return out;
  }

  /** Confirms pins and releases those the directory now agrees with; adds the nodes whose lists change. */
  private settle(touched: Set<number>): void {
    for (const [k, p] of this.pins) {
      const holders = this.listing(k);
      const listed = p.node === this.host.self || holders.includes(p.node);
      if (listed) p.confirmed = true;
      if (p.hold) continue;
      const others = holders.filter((n) => n !== p.node);
      if ((p.confirmed && listed && !others.length) || (p.confirmed && !listed)) {
        this.pins.delete(k);
        touched.add(p.node);
        for (const n of others) touched.add(n);
      }
    }
  }

  private push(node: number): void {
    if (node === this.host.self) return;
    this.host.apply(node, this.effective(node));
  }
}
