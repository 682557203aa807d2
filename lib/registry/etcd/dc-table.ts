// dc-table.ts — the DC table kept in etcd: /dvs/<ns>/dcs/<dc> =
// {"nodes":[...],"version":N} (no lease: a DC outlives its nodes). Every agent
// watches the prefix and emits 'change' with the whole table. create is a
// create-if-absent transaction (exists → EDVSSLOTUSED); addNode/removeNode
// read the key and swap it iff its mod revision is unchanged (retried on a
// race). The DCs of the agent's configuration (--dc) are created at version 0
// if absent (the first agent's wins; later changes go through the API).
// Changes need etcd: while it is unreachable they fail with EDVSNOTCONN (the
// table known last stays in force).
import type { DcSpec } from '../../agent/config.js';
import type { DcEvents, DcHost, DcInfo, DcTable } from '../../dc/dc-table.js';
import { checkNodes } from '../../dc/embedded.js';
import { DvsError } from '../../errors.js';
import { TypedEmitter } from '../../membership/membership.js';
import { checkDc, checkNode, MAX_DC, MAX_NODE } from '../../validate.js';
import { parseObject, type EtcdSession, type Kv, type KvChange, type SessionPart } from './session.js';

interface Row {
  info: DcInfo;
  mod: number;
}

function parseRow(k: string, kv: Kv): Row | null {
  if (!/^\d{1,4}$/.test(k) || Number(k) > MAX_DC) return null;
  const v = parseObject(kv.value);
  if (!v) return null;
  const { nodes, version } = v;
  if (!Number.isSafeInteger(version) || (version as number) < 0) return null;
  if (!Array.isArray(nodes) || nodes.length > MAX_NODE + 1 || !nodes.every((n) => Number.isInteger(n) && n >= 0 && n <= MAX_NODE)) return null;
  return { info: { dc: Number(k), nodes: [...new Set(nodes as number[])].sort((a, b) => a - b), version: version as number }, mod: kv.mod };
}

const encode = (nodes: number[], version: number): string => JSON.stringify({ nodes, version });
const copy = (i: DcInfo): DcInfo => ({ dc: i.dc, nodes: [...i.nodes], version: i.version });

export class EtcdDcTable extends TypedEmitter<DcEvents> implements DcTable, SessionPart {
  readonly prefix = 'dcs/';
  private readonly rows = new Map<number, Row>();
  private readonly initial: DcSpec[];
  private configured = false;
  private stopped = false;

  constructor(
    private readonly session: EtcdSession,
    initial: readonly DcSpec[],
    private readonly host: DcHost,
  ) {
    super();
    // Merged per DC, as the embedded table does.
    const m = new Map<number, Set<number>>();
    for (const d of initial) {
      const dc = checkDc(d.dc);
      const s = m.get(dc) ?? new Set<number>();
      for (const n of d.nodes) s.add(checkNode(n));
      m.set(dc, s);
    }
    this.initial = [...m].map(([dc, s]) => ({ dc, nodes: [...s].sort((a, b) => a - b) }));
  }

  start(): Promise<void> {
    this.stopped = false;
    return this.session.start();
  }

  stop(): void {
    this.stopped = true;
  }

  list(): DcInfo[] {
    return [...this.rows.values()].map((r) => copy(r.info)).sort((a, b) => a.dc - b.dc);
  }

  async create(dc: number, nodes: number[]): Promise<DcInfo> {
    const d = checkDc(dc);
    const ns = checkNodes(nodes);
    const r = await this.call(() => this.session.cas(this.prefix + d, 'absent', { value: encode(ns, 1), onLease: false }, this.session.clientUp()));
    if (!r.ok) {
      const cur = r.cur ? parseRow(String(d), r.cur) : null;
      if (cur) this.put(d, cur);
      throw new DvsError('EDVSSLOTUSED', `DC ${d} exists (nodes ${cur?.info.nodes.join(',') || 'none'})`);
    }
    return this.put(d, { info: { dc: d, nodes: ns, version: 1 }, mod: r.rev });
  }

  addNode(dc: number, node: number): Promise<DcInfo> {
    const n = checkNode(node);
    return this.modify(dc, (cur) => (cur.nodes.includes(n) ? null : [...cur.nodes, n].sort((a, b) => a - b)));
  }

  removeNode(dc: number, node: number): Promise<DcInfo> {
    const n = checkNode(node);
    return this.modify(dc, (cur) => {
      if (!cur.nodes.includes(n)) return null;
      const bound = this.host.boundIn(cur.dc, n);
      if (bound > 0) throw new DvsError('EDVSBUSY', `node ${n} still has ${bound} endpoint${bound === 1 ? '' : 's'} bound in DC ${cur.dc}`);
      return cur.nodes.filter((x) => x !== n);
    });
  }

  // ---- SessionPart ----

  snapshot(kvs: Kv[]): void {
    const before = JSON.stringify(this.list());
    this.rows.clear();
    for (const kv of kvs) {
      const r = parseRow(kv.key, kv);
      if (r) this.rows.set(r.info.dc, r);
      else this.host.warn('malformed DC key in etcd ignored', { key: this.session.key(this.prefix + kv.key) });
    }
    if (JSON.stringify(this.list()) !== before) this.emit('change', this.list());
  }

  changes(ch: KvChange[]): void {
    let changed = false;
    for (const c of ch) {
      const dc = Number(c.key);
      const old = this.rows.get(dc);
      if (c.type === 'delete') {
        if (old && old.mod <= c.kv.mod) {
          this.rows.delete(dc);
          changed = true;
        }
        continue;
      }
      const r = parseRow(c.key, c.kv);
      if (!r) {
        this.host.warn('malformed DC key in etcd ignored', { key: this.session.key(this.prefix + c.key) });
        continue;
      }
      if (old && old.mod >= r.mod) continue;
      this.rows.set(dc, r);
      changed = changed || JSON.stringify(old?.info) !== JSON.stringify(r.info);
    }
    if (changed) this.emit('change', this.list());
  }

  /** The configured DCs, once: created at version 0 where absent. */
  async sync(): Promise<void> {
    if (this.configured) return;
    for (const d of this.initial) {
      const r = await this.session.cas(this.prefix + d.dc, 'absent', { value: encode(d.nodes, 0), onLease: false });
      if (r.ok) this.put(d.dc, { info: { dc: d.dc, nodes: d.nodes, version: 0 }, mod: r.rev });
    }
    this.configured = true;
  }

  // ----

  private put(dc: number, r: Row): DcInfo {
    const old = this.rows.get(dc);
    if (!old || old.mod < r.mod) {
      this.rows.set(dc, r);
      if (JSON.stringify(old?.info) !== JSON.stringify(r.info)) this.emit('change', this.list());
    }
    return copy(r.info);
  }

  private async call<R>(f: () => Promise<R>): Promise<R> {
    if (this.stopped) throw new DvsError('EDVSNOTCONN', 'the agent is stopping');
    try {
      return await f();
    } catch (e) {
      throw this.session.notConnected(e);
    }
  }

  /** Read, change, compare-and-swap on the mod revision; again on a race. `f` returns null for "no change". */
  private async modify(dc: number, f: (cur: DcInfo) => number[] | null): Promise<DcInfo> {
    const d = checkDc(dc);
    const rel = this.prefix + d;
    for (let i = 0; i < 20; i++) {
      const kv = await this.call(() => this.session.get(rel, this.session.clientUp()));
      const cur = kv ? parseRow(String(d), kv) : null;
      if (!cur) throw new DvsError('EDVSBADDCID', `DC ${d} does not exist (create it first)`);
      this.put(d, cur);
      const nodes = f(cur.info);
      if (!nodes) return copy(cur.info);
      const version = cur.info.version + 1;
      const r = await this.call(() => this.session.cas(rel, cur.mod, { value: encode(nodes, version), onLease: false }, this.session.clientUp()));
      if (r.ok) return this.put(d, { info: { dc: d, nodes, version }, mod: r.rev });
    }
    throw new DvsError('EDVSBUSY', `DC ${d} keeps changing under us; try again`);
  }
}
