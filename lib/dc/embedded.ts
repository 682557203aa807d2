// embedded.ts — the DC table kept by the agents themselves (no extra service).
//
// Every DC carries (version, origin node). A change made on one agent bumps the
// version, stamps its own node as origin and is sent as a CONTROL message
// {k:'dc', t:'set', dcs:[[dc, version, origin, [nodes]]]} to every peer whose
// link is up; the full table goes to a peer when its link comes up. An entry
// replaces ours when its (version, origin) is higher, so every agent ends with
// the same table whatever the order of arrival; an agent that changed its table
// because of a message forwards the change to its other peers (one extra hop
// reaches a peer whose link to the origin was down). The initial table comes
// from the configuration (`--dc`), version 0.
//
// There is no delete: a DC, once defined, stays defined (possibly with no node).
// Two agents creating the same DC at the same moment both succeed locally; the
// higher origin wins everywhere.
import { DvsError } from '../errors.js';
import { TypedEmitter } from '../membership/membership.js';
import { checkDc, checkNode, MAX_DC, MAX_NODE } from '../validate.js';
import type { DcEvents, DcHost, DcInfo, DcTable } from './dc-table.js';

interface Row {
  dc: number;
  nodes: number[];
  version: number;
  origin: number;
}

type WireRow = [number, number, number, number[]];

/** Distinct, sorted, valid node numbers; EDVSINVAL/EDVSBADNODEID otherwise. */
export function checkNodes(nodes: unknown): number[] {
  if (!Array.isArray(nodes)) throw new DvsError('EDVSINVAL', 'nodes must be an array of node numbers');
  if (nodes.length === 0) throw new DvsError('EDVSINVAL', 'a DC needs at least one node');
  return [...new Set(nodes.map((n) => checkNode(n)))].sort((a, b) => a - b);
}

/** Validates a peer's rows (they crossed the network). */
function parseRows(x: unknown): Row[] | null {
  if (!Array.isArray(x) || x.length > MAX_DC + 1) return null;
  const out: Row[] = [];
  for (const r of x as unknown[]) {
    if (!Array.isArray(r) || r.length !== 4) return null;
    const [dc, version, origin, nodes] = r as unknown[];
    if (!Number.isInteger(dc) || (dc as number) < 0 || (dc as number) > MAX_DC) return null;
    if (!Number.isSafeInteger(version) || (version as number) < 0) return null;
    if (!Number.isInteger(origin) || (origin as number) < 0 || (origin as number) > MAX_NODE) return null;
    if (!Array.isArray(nodes) || nodes.length > MAX_NODE + 1) return null;
    if (!nodes.every((n) => Number.isInteger(n) && n >= 0 && n <= MAX_NODE)) return null;
    out.push({ dc: dc as number, version: version as number, origin: origin as number, nodes: [...new Set(nodes as number[])].sort((a, b) => a - b) });
  }
  return out;
}

const newer = (a: Row, b: Row): boolean => a.version > b.version || (a.version === b.version && a.origin > b.origin);
const wire = (r: Row): WireRow => [r.dc, r.version, r.origin, r.nodes];
const info = (r: Row): DcInfo => ({ dc: r.dc, nodes: [...r.nodes], version: r.version });

export class EmbeddedDcTable extends TypedEmitter<DcEvents> implements DcTable {
  private readonly rows = new Map<number, Row>();
  private stopped = false;

  constructor(
    private readonly self: number,
    initial: readonly { dc: number; nodes: number[] }[],
    private readonly host: DcHost,
  ) {
    super();
    for (const d of initial) {
      const dc = checkDc(d.dc);
      const prev = this.rows.get(dc);
      const nodes = [...new Set([...(prev?.nodes ?? []), ...d.nodes.map((n) => checkNode(n))])].sort((a, b) => a - b);
      this.rows.set(dc, { dc, nodes, version: 0, origin: self });
    }
  }

  async start(): Promise<void> {
    this.stopped = false;
  }

  stop(): void {
    this.stopped = true;
  }

  list(): DcInfo[] {
    return [...this.rows.values()].sort((a, b) => a.dc - b.dc).map(info);
  }

  async create(dc: number, nodes: number[]): Promise<DcInfo> {
    const d = checkDc(dc);
    const ns = checkNodes(nodes);
    const cur = this.rows.get(d);
    if (cur) throw new DvsError('EDVSSLOTUSED', `DC ${d} exists (nodes ${cur.nodes.join(',') || 'none'})`);
    return this.local({ dc: d, nodes: ns, version: 1, origin: this.self });
  }

  async addNode(dc: number, node: number): Promise<DcInfo> {
    const cur = this.existing(dc);
    const n = checkNode(node);
    if (cur.nodes.includes(n)) return info(cur);
    return this.local({ ...cur, nodes: [...cur.nodes, n].sort((a, b) => a - b), version: cur.version + 1, origin: this.self });
  }

  async removeNode(dc: number, node: number): Promise<DcInfo> {
    const cur = this.existing(dc);
    const n = checkNode(node);
    if (!cur.nodes.includes(n)) return info(cur);
    const bound = this.host.boundIn(cur.dc, n);
    if (bound > 0) throw new DvsError('EDVSBUSY', `node ${n} still has ${bound} endpoint${bound === 1 ? '' : 's'} bound in DC ${cur.dc}`);
    return this.local({ ...cur, nodes: cur.nodes.filter((x) => x !== n), version: cur.version + 1, origin: this.self });
  }

  receive(from: number, msg: unknown): void {
    if (this.stopped) return;
    const m = msg as { t?: unknown; dcs?: unknown };
    const rows = m.t === 'set' ? parseRows(m.dcs) : null;
    if (!rows) {
      this.host.warn('malformed DC table message ignored', { peer: from });
      return;
    }
    const changed = rows.filter((r) => {
      const cur = this.rows.get(r.dc);
      if (cur && !newer(r, cur)) return false;
      this.rows.set(r.dc, r);
      return true;
    });
    if (!changed.length) return;
    this.broadcast(changed, from);
    this.emit('change', this.list());
  }

  peerUp(node: number): void {
    if (this.stopped || !this.rows.size) return;
    this.host.send(node, { k: 'dc', t: 'set', dcs: [...this.rows.values()].map(wire) });
  }

  private existing(dc: number): Row {
    const d = checkDc(dc);
    const cur = this.rows.get(d);
    if (!cur) throw new DvsError('EDVSBADDCID', `DC ${d} does not exist (create it first)`);
    return cur;
  }

  private local(r: Row): DcInfo {
    if (this.stopped) throw new DvsError('EDVSNOTCONN', 'the agent is stopping');
    this.rows.set(r.dc, r);
    this.broadcast([r]);
    this.emit('change', this.list());
    return info(r);
  }

  private broadcast(rows: Row[], except?: number): void {
    const msg = { k: 'dc', t: 'set', dcs: rows.map(wire) };
    for (const n of this.host.peersUp()) if (n !== except) this.host.send(n, msg);
  }
}
