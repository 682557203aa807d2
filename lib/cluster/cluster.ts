// cluster.ts — the cluster as one node's agent sees it: the membership view,
// the endpoint directory with names, the DC table, cluster-wide ps, and DC
// changes. A `Cluster` keeps a local copy of the view, the directory and the
// DC table, current through a `watch` subscription (the agent sends a snapshot,
// then every change), so `lookup` and `locate` are Map lookups with no I/O.
//
//   const cluster = await connectCluster({ node: 1 });   // over the agent's control socket
//   const cluster = agent.cluster();                      // in the agent's own process
import type { NodeRow, PsResult, WatchEvent, WatchSnapshot, WireEntry } from '../agent/agent.js';
import { ControlClient, defaultNamespace } from '../agent/control.js';
import type { DcInfo } from '../dc/dc-table.js';
import type { MigrateOptions, MigrationRecord } from '../migration/index.js';
import { DvsError } from '../errors.js';
import { TypedEmitter, type View } from '../membership/membership.js';
import { checkDc, checkEp, checkName, checkNode, checkTimeout } from '../validate.js';

/** Where an endpoint is bound. */
export interface ClusterEntry {
  readonly dc: number;
  readonly ep: number;
  readonly node: number;
  /** Its incarnation on that node. */
  readonly gen: number;
  readonly pid: number;
  /** '' when bound without a name. */
  readonly name: string;
}

export type ClusterEvents = {
  /** A new membership view (with static peers: view 0 again, with new link states). */
  view: [View];
  /** The DC table changed. */
  dcs: [DcInfo[]];
  /** The handle closed: by close() (null) or because the agent went away (EDVSNOTCONN). */
  close: [DvsError | null];
};

export interface ConnectOptions {
  /** The node whose agent to talk to (default $DVS_NODE or 0). */
  node?: number;
  /** Default $DVS_NAMESPACE or "default". */
  namespace?: string;
  /** For connecting and for each request (ms, default 5000). */
  timeoutMs?: number;
}

export interface WaitForBindOptions {
  /** Default: no limit. 0: only what is known now. Expiry → EDVSTIMEDOUT. */
  timeoutMs?: number;
}

export interface PsOptions {
  /** true (default): the local endpoints of every member; false: the table of this handle's node only (with its proxies). */
  all?: boolean;
}

/** @internal How a Cluster reaches its agent (a control connection, or the agent itself in-process). */
export interface ClusterSource {
  readonly node: number;
  request(op: string, args: Record<string, unknown>, timeoutMs?: number): Promise<unknown>;
  /** While true, the source keeps the process alive (someone waits for a bind). */
  keepAlive?(on: boolean): void;
  close(): void;
}

interface Waiter {
  dc: number;
  target: number | string;
  resolve(e: ClusterEntry): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout | null;
}

type Index<K> = Map<number, Map<K, ClusterEntry[]>>;

function indexAdd<K>(ix: Index<K>, dc: number, k: K, e: ClusterEntry): void {
  let m = ix.get(dc);
  if (!m) ix.set(dc, (m = new Map()));
  const a = m.get(k);
  if (!a) m.set(k, [e]);
  else {
    a.push(e);
    a.sort((x, y) => x.node - y.node);  // the lowest node first, the same everywhere
  }
}

function indexRemove<K>(ix: Index<K>, dc: number, k: K, e: ClusterEntry): void {
  const m = ix.get(dc);
  const a = m?.get(k);
  if (!m || !a) return;
  const i = a.indexOf(e);
  if (i >= 0) a.splice(i, 1);
  if (!a.length) m.delete(k);
  if (!m.size) ix.delete(dc);
}

export class Cluster extends TypedEmitter<ClusterEvents> {
  /** The node whose agent this handle follows. */
  readonly node: number;
  private currentView: View;
  private dcTable: DcInfo[];
  private readonly byNode = new Map<number, ClusterEntry[]>();
  private readonly byName: Index<string> = new Map();
  private readonly byEp: Index<number> = new Map();
  private readonly waiters = new Set<Waiter>();
  private closedBy: DvsError | null = null;

  /** @internal Use connectCluster() or agent.cluster(). */
  constructor(
    private readonly source: ClusterSource,
    snap: WatchSnapshot,
  ) {
    super();
    this.node = source.node;
    this.currentView = snap.view;
    this.dcTable = snap.dcs;
    for (const d of snap.dir) this.setNode(d.node, d.eps);
  }

  /** The current membership view (a copy). */
  view(): View {
    this.open();
    return { number: this.currentView.number, members: this.currentView.members.map((m) => ({ ...m })) };
  }

  /** The members with the number of endpoints bound on each (0 for dead and departed members). */
  nodes(): NodeRow[] {
    this.open();
    return this.currentView.members.map((m) => ({ ...m, endpoints: m.state === 'dead' || m.state === 'left' ? 0 : (this.byNode.get(m.node)?.length ?? 0) }));
  }

  /** The DC table (sorted by dc; a copy). */
  dcs(): DcInfo[] {
    this.open();
    return this.dcTable.map((d) => ({ ...d, nodes: [...d.nodes] }));
  }

  /**
   * The endpoint bound with `name` in `dc`, or null; from the local cache (no
   * I/O). A name is unique per DC on one node; when several nodes bind the same
   * name, the lowest node's is returned.
   */
  lookup(dc: number, name: string): ClusterEntry | null {
    if (this.closedBy) this.open();
    const a = this.byName.get(dc)?.get(name);
    if (a) return a[0];
    checkDc(dc);
    checkName(name);
    return null;
  }

  /** Where endpoint `ep` of `dc` is bound, or null (the lowest node's if several). */
  locate(dc: number, ep: number): ClusterEntry | null {
    if (this.closedBy) this.open();
    const a = this.byEp.get(dc)?.get(ep);
    if (a) return a[0];
    checkDc(dc);
    checkEp(ep);
    return null;
  }

  /**
   * Resolves with the entry as soon as an endpoint `ep` (a number) or named
   * `name` (a string) is bound in `dc` anywhere in the cluster; at once if it
   * already is. EDVSTIMEDOUT after `timeoutMs`.
   */
  waitForBind(dc: number, target: number | string, opts: WaitForBindOptions = {}): Promise<ClusterEntry> {
    try {
      this.open();
      checkDc(dc);
      if (typeof target === 'number') checkEp(target);
      else if (typeof target === 'string') checkName(target);
      else throw new DvsError('EDVSINVAL', `waitForBind takes an endpoint number or a name, got ${target === null ? 'null' : typeof target}`);
      if (opts === null || typeof opts !== 'object') throw new DvsError('EDVSINVAL', 'waitForBind options must be an object ({ timeoutMs })');
      const ms = checkTimeout(opts.timeoutMs);
      const now = this.find(dc, target);
      if (now) return Promise.resolve(now);
      if (ms === 0) throw new DvsError('EDVSTIMEDOUT', `${what(dc, target)} is not bound`);
      return new Promise((resolve, reject) => {
        const w: Waiter = { dc, target, resolve, reject, timer: null };
        if (ms > 0)
          w.timer = setTimeout(() => {
            this.dropWaiter(w);
            reject(new DvsError('EDVSTIMEDOUT', `${what(dc, target)} was not bound within ${ms} ms`));
          }, ms);
        this.waiters.add(w);
        if (this.waiters.size === 1) this.source.keepAlive?.(true);
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Creates DC `dc` spanning `nodes` (EDVSSLOTUSED if it exists); resolves once this handle's table shows it. */
  async createDc(dc: number, nodes: number[]): Promise<DcInfo> {
    this.open();
    checkDc(dc);
    if (!Array.isArray(nodes)) throw new DvsError('EDVSINVAL', 'nodes must be an array of node numbers');
    if (!nodes.length) throw new DvsError('EDVSINVAL', 'a DC needs at least one node');
    nodes.forEach((n) => checkNode(n));
    return (await this.source.request('dc-create', { dc, nodes })) as DcInfo;
  }

  /** Adds `node` to DC `dc` (EDVSBADDCID if there is no such DC). */
  async addNodeToDc(dc: number, node: number): Promise<DcInfo> {
    this.open();
    return (await this.source.request('dc-add-node', { dc: checkDc(dc), node: checkNode(node) })) as DcInfo;
  }

  /** Removes `node` from DC `dc`; EDVSBUSY while that node still has endpoints bound in the DC. */
  async removeNodeFromDc(dc: number, node: number): Promise<DcInfo> {
    this.open();
    return (await this.source.request('dc-remove-node', { dc: checkDc(dc), node: checkNode(node) })) as DcInfo;
  }

  /** Endpoints with their node, pid, name and message counts: cluster-wide (default) or this node's table. */
  async ps(opts: PsOptions = {}): Promise<PsResult> {
    this.open();
    if (opts === null || typeof opts !== 'object') throw new DvsError('EDVSINVAL', 'ps options must be an object ({ all })');
    if (opts.all !== undefined && typeof opts.all !== 'boolean') throw new DvsError('EDVSINVAL', 'ps: all must be a boolean');
    if (opts.all === false) {
      const r = (await this.source.request('ps', {})) as { node: number; endpoints: PsResult['endpoints'] };
      const local = r.endpoints.filter((e) => e.where === 'local').length;
      const self = this.currentView.members.find((m) => m.node === r.node);
      return { node: r.node, scope: 'local', nodes: [{ node: r.node, state: self?.state ?? 'alive', answered: true, endpoints: local }], endpoints: r.endpoints };
    }
    return (await this.source.request('ps', { cluster: true })) as PsResult;
  }

  /**
   * Moves service endpoint `ep` of `dc` (served by \`dvs serve\`) to node `to`,
   * transparently for its clients: their messages and calls wait during the
   * switch and then go to the new node; nothing is lost, duplicated or
   * reordered. Resolves with the committed record (from, to, downtimeMs,
   * totalMs, messages moved...). On a failure the migration is rolled back
   * (the service keeps serving at its source) and the promise rejects with the
   * cause. Refusals, with no effect: EDVSNOTBIND (not bound anywhere),
   * EDVSNODCNODE (`to` is not in the DC), EDVSBUSY (already migrating),
   * EDVSNOSYS (method 'ptrace' or 'criu': not available yet).
   */
  async migrate(o: MigrateOptions & { timeoutMs?: number }): Promise<MigrationRecord> {
    this.open();
    if (o === null || typeof o !== 'object') throw new DvsError('EDVSINVAL', 'migrate takes { dc, ep, to, method }');
    const { dc, ep, to, method, quiesceTimeoutMs, timeoutMs } = o;
    checkDc(dc);
    checkEp(ep);
    checkNode(to);
    const wait = timeoutMs === undefined ? 120_000 : checkTimeout(timeoutMs);
    if (wait <= 0) throw new DvsError('EDVSINVAL', 'timeoutMs must be > 0');
    const args: Record<string, unknown> = { dc, ep, to, method: method ?? 'state' };
    if (quiesceTimeoutMs !== undefined) args.quiesceTimeoutMs = quiesceTimeoutMs;
    if (timeoutMs !== undefined) args.timeoutMs = wait;
    return (await this.source.request('migrate', args, wait + 5000)) as MigrationRecord;
  }

  /** Stops following the agent: pending waitForBind calls fail with EDVSNOTCONN; later calls throw it. */
  close(): void {
    if (this.closedBy) return;
    this.shut(new DvsError('EDVSNOTCONN', 'this cluster handle is closed'));
    this.source.close();
    this.emit('close', null);
  }

  get isClosed(): boolean {
    return this.closedBy !== null;
  }

  /** @internal A change pushed by the agent. */
  _apply(e: WatchEvent): void {
    if (this.closedBy) return;
    switch (e.ev) {
      case 'view':
        this.currentView = e.view;
        this.emit('view', this.view());
        break;
      case 'dcs':
        this.dcTable = e.dcs;
        this.emit('dcs', this.dcs());
        break;
      case 'dir':
        this.setNode(e.node, e.eps);
        break;
    }
  }

  /** @internal The agent went away. */
  _lost(err: DvsError): void {
    if (this.closedBy) return;
    this.shut(err);
    this.source.close();
    this.emit('close', err);
  }

  private shut(err: DvsError): void {
    this.closedBy = err;
    for (const w of this.waiters) {
      if (w.timer) clearTimeout(w.timer);
      w.reject(err);
    }
    this.waiters.clear();
    this.source.keepAlive?.(false);
  }

  private dropWaiter(w: Waiter): void {
    this.waiters.delete(w);
    if (!this.waiters.size) this.source.keepAlive?.(false);
  }

  private open(): void {
    if (this.closedBy) throw new DvsError('EDVSNOTCONN', this.closedBy.message.replace(/^EDVS[A-Z0-9]+: /, ''));
  }

  private find(dc: number, target: number | string): ClusterEntry | null {
    const a = typeof target === 'number' ? this.byEp.get(dc)?.get(target) : this.byName.get(dc)?.get(target);
    return a ? a[0] : null;
  }

  /** Replaces what is known about one node's endpoints. */
  private setNode(node: number, eps: readonly WireEntry[]): void {
    for (const e of this.byNode.get(node) ?? []) {
      indexRemove(this.byEp, e.dc, e.ep, e);
      if (e.name) indexRemove(this.byName, e.dc, e.name, e);
    }
    const now: ClusterEntry[] = eps.map(([dc, ep, gen, pid, name]) => Object.freeze({ dc, ep, node, gen, pid, name: name ?? '' }));
    if (now.length) this.byNode.set(node, now);
    else this.byNode.delete(node);
    for (const e of now) {
      indexAdd(this.byEp, e.dc, e.ep, e);
      if (e.name) indexAdd(this.byName, e.dc, e.name, e);
    }
    if (!this.waiters.size || !now.length) return;
    for (const w of this.waiters) {
      const hit = this.find(w.dc, w.target);
      if (!hit) continue;
      this.dropWaiter(w);
      if (w.timer) clearTimeout(w.timer);
      w.resolve(hit);
    }
  }
}

function what(dc: number, target: number | string): string {
  return typeof target === 'number' ? `endpoint ${target} of DC ${dc}` : `an endpoint named ${JSON.stringify(target)} in DC ${dc}`;
}

/** A Cluster handle following node `node`'s agent over its control socket (the agent must be running: EDVSNOTCONN otherwise). */
export async function connectCluster(opts: ConnectOptions = {}): Promise<Cluster> {
  if (opts === null || typeof opts !== 'object') throw new DvsError('EDVSINVAL', 'connectCluster options must be an object ({ node, namespace })');
  const envNode = process.env.DVS_NODE;
  const node = checkNode(opts.node ?? (envNode !== undefined ? Number(envNode) : 0));
  if (opts.namespace !== undefined && (typeof opts.namespace !== 'string' || !/^[A-Za-z0-9_.-]{1,100}$/.test(opts.namespace)))
    throw new DvsError('EDVSINVAL', 'namespace must be 1-100 characters of [A-Za-z0-9_.-]');
  const ms = opts.timeoutMs === undefined ? 5000 : checkTimeout(opts.timeoutMs);
  if (ms <= 0) throw new DvsError('EDVSINVAL', 'timeoutMs must be > 0');
  const ns = defaultNamespace(opts.namespace);
  const client = await ControlClient.connect(ns, node, ms);
  let c: Cluster | null = null;
  // Changes can arrive in the same chunk as the snapshot: hold them until the handle exists.
  const early: WatchEvent[] = [];
  client.onPush = (m) => (c ? c._apply(m as unknown as WatchEvent) : early.push(m as unknown as WatchEvent));
  let snap: WatchSnapshot;
  try {
    snap = (await client.request('watch', {}, ms)) as WatchSnapshot;
  } catch (e) {
    client.close();
    throw e;
  }
  const cluster = new Cluster(
    { node, request: (op, args, timeoutMs) => client.request(op, args, timeoutMs ?? Math.max(ms, 10000)), keepAlive: (on) => client.keepAlive(on), close: () => client.close() },
    snap,
  );
  c = cluster;
  for (const e of early) cluster._apply(e);
  client.onClose = (err) => cluster._lost(new DvsError('EDVSNOTCONN', `lost the agent of node ${node}: ${err.message.replace(/^EDVS[A-Z0-9]+: /, '')}`));
  return cluster;
}
