// agent.ts — the node agent: owns the node's arena, runs the data-plane engine
// (native thread: proxies <-> reliable UDP), keeps the directory of remote
// endpoints in the arena, the DC table, and serves the control socket. Runs as
// `dvs agent` (its own process) or embedded in the calling process (`startAgent`).
import type { Directory, DirectoryEntry } from '../directory/directory.js';
import type { DcInfo } from '../dc/dc-table.js';
import { checkNodes } from '../dc/embedded.js';
import { DvsError } from '../errors.js';
import { EmbeddedMembership } from '../membership/embedded.js';
import type { Member, MemberState, Membership, View } from '../membership/membership.js';
import { binding, EngineEvent, type EngineEndpoint, type FaultOptions, type NativeEngine } from '../native.js';
import { createRegistry, type Registry } from '../registry/registry.js';
import { checkDc, checkName, checkNode, isName } from '../validate.js';
import { Cluster, type ClusterSource } from '../cluster/cluster.js';
import { Migrations, Pins, RUNTIME_OPS, type MigrateOptions, type MigrationRecord, type MigrationsList } from '../migration/index.js';
import { checkConfig, type AgentConfig, type PeerAddress } from './config.js';
import { ControlServer, controlPath, defaultNamespace, type ControlConnection, type ControlRequest } from './control.js';
import { jsonLogger, type Logger } from './log.js';

export interface PeerStatus {
  node: number;
  address: string;
  up: boolean;
  incarnation: number;
  endpoints: number;
  since: number;
}

export interface AgentStatus {
  node: number;
  namespace: string;
  pid: number;
  listen: string;
  incarnation: number;
  startedAt: string;
  /** The control-plane backend ('static': --peers only). */
  registry: Registry['kind'];
  peers: PeerStatus[];
  dcs: DcInfo[];
  clients: number;
}

export interface NodeRow extends Member {
  /** Endpoints bound on that node as this node's directory knows them. */
  endpoints: number;
}

export interface NodesResult {
  node: number;
  namespace: string;
  /** 'embedded' or 'etcd' (membership), or 'static' (--peers only: view number 0, states from the links). */
  mode: Registry['kind'];
  view: number;
  members: NodeRow[];
}

export interface PsRow {
  dc: number;
  ep: number;
  /** Relative to the node that answered: its own endpoints are 'local'. */
  where: 'local' | 'remote';
  node: number;
  pid: number;
  gen: number;
  /** '' when bound without a name. */
  name: string;
  msgsIn: number;
  msgsOut: number;
}

/** How each member answered a cluster-wide ps. */
export interface PsNodeStatus {
  node: number;
  state: MemberState;
  /** false: not reachable, or no answer within the wait (see `error`); its endpoints are missing. */
  answered: boolean;
  endpoints: number;
  error?: string;
}

export interface PsResult {
  /** The node that gathered the answer. */
  node: number;
  /** 'cluster': the local endpoints of every member; 'local': this node's table (its endpoints and proxies). */
  scope: 'cluster' | 'local';
  nodes: PsNodeStatus[];
  /** Sorted by dc, ep, node. */
  endpoints: PsRow[];
}

/** What a watcher of the agent receives (control op `watch`, `agent.cluster()`). */
export type WireEntry = [dc: number, ep: number, gen: number, pid: number, name: string];
export type WatchEvent = { ev: 'view'; view: View } | { ev: 'dcs'; dcs: DcInfo[] } | { ev: 'dir'; node: number; eps: WireEntry[] };
export interface WatchSnapshot {
  node: number;
  incarnation: number;
  view: View;
  dcs: DcInfo[];
  dir: { node: number; eps: WireEntry[] }[];
}

/** Membership mode defaults: transport deadAfterMs, then suspect → dead (detection 1.5 s). */
const MEMBERSHIP_DEAD_AFTER_MS = 1000;
const SUSPECT_MS = 500;
/** How often the agent sweeps its arena for processes that died without it noticing. */
const REAP_INTERVAL_MS = 1000;
/** A cluster-wide ps waits this long for the other agents (ms). */
const PS_WAIT_MS = 2000;
const MAX_PS_ROWS = 1 << 16;

// Embedded agents still running when the process exits (process.exit(), an
// uncaught exception) close their engine on the way out, so the node's arena
// does not outlive its last process.
const running = new Set<Agent>();
let exitHook = false;

interface PeerState {
  addr: PeerAddress;
  up: boolean;
  incarnation: number;
  since: number;
}

interface Watcher {
  push(e: WatchEvent): void;
  /** The agent stopped. */
  lost?(): void;
}

interface PsWait {
  node: number;
  done(rows: PsRow[] | null): void;
}

export class Agent {
  readonly node: number;
  readonly namespace: string;
  readonly incarnation: number;
  /** The UDP port the transport is bound to (useful with listen port 0). */
  readonly port: number;
  private readonly engine: NativeEngine;
  private reg!: Registry;
  private readonly peers = new Map<number, PeerState>();
  private readonly clients = new Set<ControlConnection>();
  private control: ControlServer | null = null;
  private readonly startedAt = new Date();
  private stopped = false;
  /** Periodic reaping (below). */
  private reaper: NodeJS.Timeout | null = null;
  private peerWaiters: (() => void)[] = [];
  /** Every node's endpoints as this agent knows them (its own included), for watchers. */
  private readonly dir = new Map<number, DirectoryEntry[]>();
  private localKey = '';
  private readonly watchers = new Set<Watcher>();
  private readonly psWaits = new Map<number, PsWait>();
  private psSeq = 0;
  /** The directory's lists with migrations' location overrides applied (lib/migration/pins.ts). */
  private readonly pins: Pins;
  private readonly migrations: Migrations;

  private constructor(
    private readonly cfg: AgentConfig,
    private readonly log: Logger,
  ) {
    this.node = cfg.node;
    this.namespace = defaultNamespace(cfg.namespace);
    // Unique per start: peers reset their channels when it changes.
    this.incarnation = Date.now() * 1000 + Math.floor(Math.random() * 1000);
    this.engine = new binding.NativeEngine(
      {
        node: cfg.node,
        ns: this.namespace,
        host: cfg.listen.host,
        port: cfg.listen.port,
        incarnation: this.incarnation,
        mtu: cfg.mtu,
        windowBytes: cfg.windowBytes,
        heartbeatMs: cfg.heartbeatMs,
        deadAfterMs: cfg.deadAfterMs ?? (cfg.seeds ? MEMBERSHIP_DEAD_AFTER_MS : undefined),
        spinUs: cfg.spinUs,
        invoker: cfg.invoker,
        fault: cfg.fault,
        maxProcs: cfg.maxProcs,
        maxEndpoints: cfg.maxEndpoints,
        inboxCells: cfg.inboxCells,
        replyCells: cfg.replyCells,
        poolMib: cfg.poolMib,
      },
      (type, peer, inc, data) => this.onEvent(type, peer, inc, data),
    );
    this.port = this.engine.port();
    this.pins = new Pins({
      self: cfg.node,
      apply: (node, eps) => {
        this.engine.setRemote(node, flatten(eps));
        this.setDir(node, eps);
      },
      log: (level, msg, fields) => this.log(level, msg, fields),
    });
    this.migrations = new Migrations({
      node: cfg.node,
      namespace: this.namespace,
      engine: this.engine,
      pins: this.pins,
      send: (node, msg) => this.sendControl(node, msg),
      sendBytes: (node, bytes) => this.engine.sendControl(node, bytes),
      peersUp: () => this.peersUp(),
      locate: (dc, ep) => this.locate(dc, ep),
      dcNodes: (dc) => this.reg.dcs.list().find((d) => d.dc === dc)?.nodes ?? null,
      log: this.log,
    });
  }

  /** Membership (embedded or etcd); null with static peers only. */
  get membership(): Membership | null {
    return this.reg?.membership ?? null;
  }

  private get directory(): Directory {
    return this.reg.directory;
  }

  private get embedded(): EmbeddedMembership | null {
    const m = this.reg?.membership;
    return m instanceof EmbeddedMembership ? m : null;
  }

  private addPeer(p: PeerAddress): void {
    const cur = this.peers.get(p.node);
    if (cur && cur.addr.host === p.host && cur.addr.port === p.port) return;
    if (cur) cur.addr = p;
    else this.peers.set(p.node, { addr: p, up: false, incarnation: 0, since: Date.now() });
    this.engine.addPeer(p.node, p.host, p.port);
  }

  private peersUp(): number[] {
    return [...this.peers.values()].filter((p) => p.up).map((p) => p.addr.node);
  }

  private async openRegistry(): Promise<void> {
    const cfg = this.cfg;
    this.reg = await createRegistry({
      config: cfg,
      node: this.node,
      host: cfg.listen.host,
      port: this.port,
      incarnation: this.incarnation,
      deadAfterMs: cfg.deadAfterMs ?? MEMBERSHIP_DEAD_AFTER_MS,
      suspectMs: cfg.suspectMs ?? SUSPECT_MS,
      log: this.log,
      membershipHost: {
        addPeer: (node, host, port) => this.addPeer({ node, host, port }),
        removePeer: (node) => {
          if (!this.peers.delete(node)) return;
          this.engine.removePeer(node);
          this.directory.forget(node);
          this.setDir(node, []);
          this.pins.forget(node);
        },
        forget: (node) => {
          this.engine.setRemote(node, new Uint32Array(0));
          this.directory.forget(node);
          this.setDir(node, []);
          this.pins.forget(node);
        },
        send: (node, msg) => this.sendControl(node, msg),
        log: this.log,
      },
      directoryHost: {
        send: (node, msg) => this.sendControl(node, msg),
        apply: (node, eps) => {
          this.log('debug', 'remote endpoints', { peer: node, endpoints: eps.length });
          // Through the migration pins: an endpoint being (or just) migrated stays where the migration puts it.
          this.pins.set(node, eps);
        },
        peersUp: () => this.peersUp(),
        warn: (msg, fields) => this.log('warn', msg, fields),
      },
      dcHost: {
        send: (node, msg) => this.sendControl(node, msg),
        peersUp: () => this.peersUp(),
        boundIn: (dc, node) =>
          node === this.node
            ? this.engine.endpoints().filter((e) => !e.remote && e.dc === dc).length
            : (this.dir.get(node)?.filter((e) => e.dc === dc).length ?? 0),
        warn: (msg, fields) => this.log('warn', msg, fields),
      },
    });
    this.reg.membership?.on('view', (view) => this.emitWatch({ ev: 'view', view }));
    this.reg.dcs.on('change', (dcs) => {
      this.applyDcs(dcs);
      this.log('info', 'DC table', { dcs: dcs.map((d) => `${d.dc}:${d.nodes.join(',')}@${d.version}`) });
      this.emitWatch({ ev: 'dcs', dcs });
    });
    this.applyDcs(this.reg.dcs.list());
    // Endpoints bound before the registry existed (processes attached before the agent).
    this.localChanged();
  }

  /** Starts an agent: arena, engine thread, registry, control socket, peers. */
  static async start(config: AgentConfig, log?: Logger): Promise<Agent> {
    const cfg = checkConfig(config);
    const logger = log ?? jsonLogger(cfg.node, cfg.logLevel ?? 'info');
    const a = new Agent(cfg, logger);
    try {
      await a.openRegistry();
      a.control = new ControlServer(
        controlPath(a.namespace, a.node),
        (req, conn) => a.handle(req, conn),
        (conn) => a.clientGone(conn),
      );
      await a.control.listen();
    } catch (e) {
      a.reg?.stopNow();
      a.engine.close();
      throw e;
    }
    for (const p of cfg.peers) a.addPeer(p);
    try {
      await a.reg.start();
    } catch (e) {
      a.reg.stopNow();
      await a.control.close();
      a.engine.close();
      throw e;
    }
    running.add(a);
    // A process reaped when its control connection closes is the common case;
    // one that died before its connection reached the agent (SIGKILL right
    // after bind) is caught by this sweep (pid + start time per process slot).
    a.reaper = setInterval(() => {
      if (a.stopped) return;
      a.engine.reap();
      if (a.pins.size) a.pins.expire();
    }, REAP_INTERVAL_MS);
    a.reaper.unref();
    if (!exitHook) {
      exitHook = true;
      process.on('exit', () => {
        for (const r of running) r.closeNow();
      });
    }
    logger('info', 'agent started', {
      namespace: a.namespace,
      listen: `${cfg.listen.host}:${a.port}`,
      registry: a.reg.kind,
      peers: cfg.peers.map((p) => `${p.node}=${p.host}:${p.port}`),
      incarnation: a.incarnation,
      membership: cfg.seeds ? { seeds: cfg.seeds.map((p) => `${p.node}=${p.host}:${p.port}`), deadAfterMs: cfg.deadAfterMs ?? MEMBERSHIP_DEAD_AFTER_MS, suspectMs: cfg.suspectMs ?? SUSPECT_MS } : undefined,
      dcs: cfg.dcs,
      fault: cfg.fault,
      pid: process.pid,
    });
    return a;
  }

  status(): AgentStatus {
    const remote = this.directory.remote();
    return {
      node: this.node,
      namespace: this.namespace,
      pid: process.pid,
      listen: `${this.cfg.listen.host}:${this.port}`,
      incarnation: this.incarnation,
      startedAt: this.startedAt.toISOString(),
      registry: this.reg.kind,
      peers: [...this.peers.values()].map((p) => ({
        node: p.addr.node,
        address: `${p.addr.host}:${p.addr.port}`,
        up: p.up,
        incarnation: p.incarnation,
        endpoints: remote.get(p.addr.node)?.length ?? 0,
        since: p.since,
      })),
      dcs: this.reg.dcs.list(),
      clients: this.clients.size,
    };
  }

  /** The membership view; with static peers, view 0 built from the links. */
  view(): View {
    if (this.membership) return this.membership.view();
    return {
      number: 0,
      members: [
        { node: this.node, address: `${this.cfg.listen.host}:${this.port}`, incarnation: this.incarnation, state: 'alive' as const },
        ...[...this.peers.values()].map((p) => ({ node: p.addr.node, address: `${p.addr.host}:${p.addr.port}`, incarnation: p.incarnation, state: p.up ? ('alive' as const) : ('suspect' as const) })),
      ].sort((a, b) => a.node - b.node),
    };
  }

  /** The cluster's members as this node sees them, with the endpoints its directory knows per node. */
  nodes(): NodesResult {
    const remote = this.directory.remote();
    const local = this.engine.endpoints().filter((e) => !e.remote).length;
    const count = (n: number): number => (n === this.node ? local : (remote.get(n)?.length ?? 0));
    const v = this.view();
    return {
      node: this.node,
      namespace: this.namespace,
      mode: this.reg.kind,
      view: v.number,
      members: v.members.map((m) => ({ ...m, endpoints: m.state === 'dead' || m.state === 'left' ? 0 : count(m.node) })),
    };
  }

  /** The node's endpoint table: local endpoints and proxies for remote ones (names of remote ones from the directory). */
  ps(): PsRow[] {
    // Names of remote endpoints (their proxies carry none): node → (dc, ep) → name.
    const names = new Map<number, Map<number, string>>();
    for (const [node, eps] of this.dir) {
      if (node === this.node) continue;
      const m = new Map<number, string>();
      for (const d of eps) if (d.name) m.set(d.dc * 0x1000000 + d.ep, d.name);
      if (m.size) names.set(node, m);
    }
    return this.engine
      .endpoints()
      .map((e: EngineEndpoint) => ({
        dc: e.dc,
        ep: e.ep,
        where: e.remote ? ('remote' as const) : ('local' as const),
        node: e.node,
        pid: e.pid,
        gen: e.gen,
        name: e.remote ? (names.get(e.node)?.get(e.dc * 0x1000000 + e.ep) ?? '') : e.name,
        msgsIn: e.msgsIn,
        msgsOut: e.msgsOut,
      }))
      .sort(byDcEpNode);
  }

  /**
   * The local endpoints of every member: this node's own, and those of every
   * other member whose link is up, asked over CONTROL ({k:'ps'}) and awaited up
   * to `waitMs`. Members that are not reachable or do not answer in time are
   * listed with `answered: false`.
   */
  async clusterPs(waitMs = PS_WAIT_MS): Promise<PsResult> {
    const own = this.ps().filter((r) => r.where === 'local');
    const up = new Set(this.peersUp());
    const asks = this.view().members.map(async (m): Promise<[PsNodeStatus, PsRow[]]> => {
      if (m.node === this.node) return [{ node: m.node, state: m.state, answered: true, endpoints: own.length }, own];
      if (!up.has(m.node) || m.state === 'dead' || m.state === 'left')
        return [{ node: m.node, state: m.state, answered: false, endpoints: 0, error: `not reachable (${m.state})` }, []];
      const rows = await this.askPs(m.node, waitMs);
      if (!rows) return [{ node: m.node, state: m.state, answered: false, endpoints: 0, error: `no answer within ${waitMs} ms` }, []];
      return [{ node: m.node, state: m.state, answered: true, endpoints: rows.length }, rows];
    });
    const all = await Promise.all(asks);
    return { node: this.node, scope: 'cluster', nodes: all.map((x) => x[0]), endpoints: all.flatMap((x) => x[1]).sort(byDcEpNode) };
  }

  private askPs(node: number, waitMs: number): Promise<PsRow[] | null> {
    return new Promise((resolve) => {
      const id = ++this.psSeq;
      const timer = setTimeout(() => w.done(null), waitMs);
      const w: PsWait = {
        node,
        done: (rows) => {
          clearTimeout(timer);
          this.psWaits.delete(id);
          resolve(rows);
        },
      };
      this.psWaits.set(id, w);
      this.sendControl(node, { k: 'ps', t: 'req', id });
    });
  }

  private onPsMessage(peer: number, msg: { t?: unknown; id?: unknown; rows?: unknown }): void {
    if (!Number.isSafeInteger(msg.id)) return void this.log('warn', 'malformed ps message ignored', { peer });
    if (msg.t === 'req') {
      const rows = this.ps()
        .filter((r) => r.where === 'local')
        .map((r) => [r.dc, r.ep, r.gen, r.pid, r.msgsIn, r.msgsOut, r.name]);
      this.sendControl(peer, { k: 'ps', t: 'res', id: msg.id, rows });
      return;
    }
    const w = this.psWaits.get(msg.id as number);
    if (msg.t !== 'res' || !w || w.node !== peer) return;
    const rows = parsePsRows(msg.rows, peer);
    if (!rows) this.log('warn', 'malformed ps answer ignored', { peer });
    w.done(rows);
  }

  /** Engine and transport counters (per peer: RTT, retransmits, window...). */
  stats(): Record<string, unknown> {
    return JSON.parse(this.engine.stats()) as Record<string, unknown>;
  }

  /** Simulated partition: drops every datagram to and from these nodes (empty: heal). */
  setPartition(nodes: number[]): void {
    this.engine.setPartition(Uint32Array.from(nodes));
    this.log('warn', nodes.length ? 'partition (fault injection)' : 'partition healed', { nodes });
  }

  /** Changes fault injection at run time (all zero: off). */
  setFault(f: FaultOptions): void {
    this.engine.setFault(f);
    this.log('info', 'fault injection', { ...f });
  }

  /** The DC table (sorted by dc). */
  dcs(): DcInfo[] {
    return this.reg.dcs.list();
  }

  createDc(dc: number, nodes: number[]): Promise<DcInfo> {
    return this.reg.dcs.create(checkDc(dc), checkNodes(nodes));
  }

  addNodeToDc(dc: number, node: number): Promise<DcInfo> {
    return this.reg.dcs.addNode(checkDc(dc), checkNode(node));
  }

  removeNodeFromDc(dc: number, node: number): Promise<DcInfo> {
    return this.reg.dcs.removeNode(checkDc(dc), checkNode(node));
  }

  /**
   * Moves service endpoint (dc, ep) to node `to` (lib/migration): run by the
   * source's agent; resolves with the committed record, or rejects with the
   * cause after rolling back (the service then keeps serving at its source).
   * Refusals: EDVSNOTBIND (unknown endpoint), EDVSNODCNODE (destination
   * outside the DC), EDVSBUSY (it is migrating already), EDVSNOSYS (method
   * other than 'state').
   */
  migrate(o: MigrateOptions & { timeoutMs?: number }): Promise<MigrationRecord> {
    if (this.stopped) return Promise.reject(new DvsError('EDVSNOTCONN', 'the agent is stopped'));
    try {
      return this.migrations.migrate(o);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Migrations this agent orchestrated, those it takes part in now, and its registered services. */
  migrationList(): MigrationsList {
    return this.migrations.list();
  }

  /** A handle on the cluster (view, directory with names, DC table) kept current by this agent, in this process. */
  cluster(): Cluster {
    if (this.stopped) throw new DvsError('EDVSNOTCONN', 'the agent is stopped');
    let c: Cluster | null = null;
    const pending: WatchEvent[] = [];
    const w: Watcher = {
      push: (e) => (c ? c._apply(e) : pending.push(e)),
      lost: () => c?._lost(new DvsError('EDVSNOTCONN', `the agent of node ${this.node} stopped`)),
    };
    const source: ClusterSource = {
      node: this.node,
      request: (op, args) => Promise.resolve().then(() => this.handle({ id: 0, op, ...args }, {})),
      close: () => void this.watchers.delete(w),
    };
    this.watchers.add(w);
    c = new Cluster(source, this.snapshot());
    for (const e of pending) c._apply(e);
    return c;
  }

  /** Resolves once every listed peer (default: all) has its link up. */
  async waitForPeers(nodes?: number[], timeoutMs = 10000): Promise<void> {
    const want = nodes ?? [...this.peers.keys()];
    const ready = (): boolean => want.every((n) => this.peers.get(n)?.up);
    const deadline = Date.now() + timeoutMs;
    while (!ready()) {
      if (Date.now() > deadline) throw new DvsError('EDVSTIMEDOUT', `peers ${want.filter((n) => !this.peers.get(n)?.up).join(', ')} not reachable within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 20);
        this.peerWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Stops the engine (proxies go, calls through this node fail), closes the control socket, detaches. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    // Graceful leave first (the engine still runs): the others mark this node 'left' at once.
    await this.reg.stop();
    if (this.stopped) return;
    this.stopped = true;
    running.delete(this);
    if (this.reaper) clearInterval(this.reaper);
    this.migrations.stop();
    this.dropWatchers();
    await this.control?.close();
    this.engine.close();
    this.log('info', 'agent stopped', {});
  }

  /** Synchronous teardown at process exit. */
  private closeNow(): void {
    this.stopped = true;
    if (this.reaper) clearInterval(this.reaper);
    this.reg.stopNow();
    this.dropWatchers();
    running.delete(this);
    this.engine.close();
  }

  private dropWatchers(): void {
    for (const w of this.psWaits.values()) w.done(null);
    const ws = [...this.watchers];
    this.watchers.clear();
    for (const w of ws) w.lost?.();
  }

  private sendControl(node: number, msg: object): void {
    this.log('debug', 'control out', { peer: node, k: (msg as { k?: string }).k, t: (msg as { t?: string }).t });
    this.engine.sendControl(node, Buffer.from(JSON.stringify(msg)));
  }

  private applyDcs(dcs: DcInfo[]): void {
    this.engine.setDcs(Uint32Array.from(dcs, (d) => d.dc), Uint32Array.from(dcs.filter((d) => d.nodes.includes(this.node)), (d) => d.dc));
  }

  private snapshot(): WatchSnapshot {
    return {
      node: this.node,
      incarnation: this.incarnation,
      view: this.view(),
      dcs: this.reg.dcs.list(),
      dir: [...this.dir].map(([node, eps]) => ({ node, eps: eps.map(wireEntry) })),
    };
  }

  private emitWatch(e: WatchEvent): void {
    for (const w of this.watchers) w.push(e);
  }

  /** A node's endpoint list changed (this node's own, a peer's announcement, a peer gone). */
  private setDir(node: number, eps: readonly DirectoryEntry[]): void {
    if (!eps.length && !this.dir.has(node)) return;
    if (eps.length) this.dir.set(node, [...eps]);
    else this.dir.delete(node);
    if (this.watchers.size) this.emitWatch({ ev: 'dir', node, eps: eps.map(wireEntry) });
  }

  private localChanged(): void {
    const eps = this.localEndpoints();
    this.directory.localChanged(eps);
    const k = eps.map((e) => `${e.dc}:${e.ep}:${e.gen}:${e.pid}:${e.name ?? ''}`).join(',');
    if (k === this.localKey) return;
    this.localKey = k;
    this.setDir(this.node, eps);
  }

  private onEvent(type: number, peer: number, inc: number, data: Buffer | string | undefined): void {
    if (this.stopped) return;
    if (!this.reg) {
      // Before the registry exists only local binds can change; picked up when it opens.
      return;
    }
    switch (type) {
      case EngineEvent.PeerUp: {
        const p = this.peers.get(peer);
        if (p) Object.assign(p, { up: true, incarnation: inc, since: Date.now() });
        this.log('info', 'peer up', { peer, incarnation: inc });
        this.directory.peerUp(peer);
        this.reg.dcs.peerUp?.(peer);
        if (p) this.embedded?.peerUp(peer, inc, `${p.addr.host}:${p.addr.port}`);
        if (!this.membership) this.emitWatch({ ev: 'view', view: this.view() });
        for (const w of this.peerWaiters.splice(0)) w();
        break;
      }
      case EngineEvent.PeerDown: {
        // (logged below at warn)
        const p = this.peers.get(peer);
        if (p) Object.assign(p, { up: false, since: Date.now() });
        this.log('warn', 'peer down', { peer });
        this.migrations.peerDown(peer);
        this.directory.peerDown(peer);
        this.embedded?.peerDown(peer);
        if (!this.membership) this.emitWatch({ ev: 'view', view: this.view() });
        for (const w of [...this.psWaits.values()]) if (w.node === peer) w.done(null);
        break;
      }
      case EngineEvent.Control: {
        if (data instanceof Buffer && data.length && data[0] !== 0x7b && this.migrations.onBinary(peer, data)) return;
        let msg: unknown;
        try {
          msg = JSON.parse(String(data));
        } catch {
          this.log('warn', 'malformed control message', { peer });
          return;
        }
        if (typeof msg !== 'object' || msg === null) return void this.log('warn', 'malformed control message', { peer });
        const k = (msg as { k?: unknown }).k;
        if (k === 'dir') this.directory.receive(peer, msg);
        else if (k === 'mem') {
          if (this.embedded) this.embedded.receive(peer, msg);
          else this.log('warn', 'membership message from a peer, but this agent has no embedded membership (no --seeds)', { peer });
        } else if (k === 'dc') {
          if (this.reg.dcs.receive) this.reg.dcs.receive(peer, msg);
          else this.log('warn', 'DC table message from a peer, but this agent keeps its DC table elsewhere', { peer });
        } else if (k === 'ps') this.onPsMessage(peer, msg as { t?: unknown; id?: unknown; rows?: unknown });
        else if (k === 'mig') this.migrations.onControl(peer, msg);
        else this.log('warn', 'unknown control message ignored', { peer, k: String(k) });
        break;
      }
      case EngineEvent.BindsChanged:
        this.localChanged();
        break;
      case EngineEvent.Warning:
        this.log('warn', String(data), { peer });
        break;
    }
  }

  private localEndpoints(): DirectoryEntry[] {
    return this.engine
      .endpoints()
      .filter((e) => !e.remote)
      .map((e) => (e.name ? { dc: e.dc, ep: e.ep, gen: e.gen, pid: e.pid, name: e.name } : { dc: e.dc, ep: e.ep, gen: e.gen, pid: e.pid }))
      .sort((a, b) => a.dc - b.dc || a.ep - b.ep);
  }

  /** Where (dc, ep) is bound: this node's own endpoints first, then a migration's pin, then the directory. */
  private locate(dc: number, ep: number): { node: number; gen: number; pid: number; name: string } | null {
    const own = this.engine.endpoints().find((e) => !e.remote && e.dc === dc && e.ep === ep);
    if (own) return { node: this.node, gen: own.gen, pid: own.pid, name: own.name };
    const pin = this.pins.pinned(dc, ep);
    for (const node of pin && pin.node !== this.node ? [pin.node] : [...this.dir.keys()].sort((a, b) => a - b)) {
      if (node === this.node) continue;
      const e = this.dir.get(node)?.find((x) => x.dc === dc && x.ep === ep);
      if (e) return { node, gen: e.gen, pid: e.pid, name: e.name ?? '' };
    }
    return null;
  }

  /** The first endpoint named `name` in `dc` (lowest node first), as this agent's directory knows it. */
  private lookup(dc: number, name: string): (DirectoryEntry & { node: number }) | null {
    for (const node of [...this.dir.keys()].sort((a, b) => a - b)) {
      const e = this.dir.get(node)!.find((x) => x.dc === dc && x.name === name);
      if (e) return { dc: e.dc, ep: e.ep, node, gen: e.gen, pid: e.pid, name: e.name };
    }
    return null;
  }

  private handle(req: ControlRequest, conn: ControlConnection): unknown {
    if (this.stopped) throw new DvsError('EDVSNOTCONN', 'the agent is stopping');
    if (RUNTIME_OPS.has(req.op)) return this.migrations.runtimeRequest(req, conn);
    switch (req.op) {
      case 'hello': {
        const pid = req.pid;
        if (!Number.isInteger(pid)) throw new DvsError('EDVSINVAL', 'hello needs a pid');
        conn.pid = pid as number;
        this.clients.add(conn);
        return { node: this.node, incarnation: this.incarnation };
      }
      case 'status':
        return this.status();
      case 'ps': {
        if (req.cluster === undefined || req.cluster === false) return { node: this.node, scope: 'local', endpoints: this.ps() };
        if (req.cluster !== true) throw new DvsError('EDVSINVAL', 'ps: cluster must be a boolean');
        const wait = req.waitMs;
        if (wait !== undefined && (!Number.isInteger(wait) || (wait as number) < 0 || (wait as number) > 60000))
          throw new DvsError('EDVSINVAL', 'ps: waitMs must be an integer in [0, 60000]');
        return this.clusterPs(wait as number | undefined);
      }
      case 'stats':
        return this.stats();
      case 'nodes':
        return this.nodes();
      case 'watch': {
        // The snapshot is this answer; changes follow as {ev} lines on the same
        // connection. (The answer is written in this same turn of the event
        // loop, so it precedes every change: those come from later events.)
        const push = conn.push;
        if (!push) throw new DvsError('EDVSINVAL', 'watch needs a control connection');
        if (!conn.watcher) {
          conn.watcher = { push };
          this.watchers.add(conn.watcher as Watcher);
        }
        return this.snapshot();
      }
      case 'dcs':
        return { dcs: this.dcs() };
      case 'dc-create':
        return this.createDc(req.dc as number, req.nodes as number[]);
      case 'dc-add-node':
        return this.addNodeToDc(req.dc as number, req.node as number);
      case 'dc-remove-node':
        return this.removeNodeFromDc(req.dc as number, req.node as number);
      case 'lookup':
        return { entry: this.lookup(checkDc(req.dc), checkName(req.name)) };
      case 'migrate': {
        const { dc, ep, to, method, quiesceTimeoutMs, timeoutMs } = req;
        if (timeoutMs !== undefined && (!Number.isInteger(timeoutMs) || (timeoutMs as number) <= 0 || (timeoutMs as number) > 600000))
          throw new DvsError('EDVSINVAL', 'migrate: timeoutMs must be an integer in [1, 600000]');
        return this.migrate({ dc, ep, to, method, quiesceTimeoutMs, timeoutMs } as MigrateOptions & { timeoutMs?: number });
      }
      case 'migrations':
        return this.migrationList();
      case 'fault': {
        if (req.partition !== undefined) {
          const p = req.partition;
          if (!Array.isArray(p) || p.length > 1024 || !p.every((n) => Number.isInteger(n) && n >= 0 && n <= 1023))
            throw new DvsError('EDVSINVAL', 'fault partition must be an array of node numbers (empty: heal)');
          this.setPartition(p as number[]);
          if (Object.keys(req).every((k) => k === 'id' || k === 'op' || k === 'partition')) return { ok: true };
        }
        const f: FaultOptions = {};
        for (const k of ['loss', 'dup', 'reorder', 'delayUs', 'jitterUs', 'seed'] as const) {
          const v = req[k];
          if (v === undefined) continue;
          if (typeof v !== 'number' || !(v >= 0) || ((k === 'loss' || k === 'dup' || k === 'reorder') && v > 1))
            throw new DvsError('EDVSINVAL', `fault ${k} must be a number >= 0 (probabilities <= 1)`);
          f[k] = v;
        }
        this.setFault(f);
        return { ok: true };
      }
      default:
        throw new DvsError('EDVSINVAL', `unknown control request '${req.op}'`);
    }
  }

  private clientGone(conn: ControlConnection): void {
    if (conn.watcher) this.watchers.delete(conn.watcher as Watcher);
    if (!this.stopped) this.migrations.connClosed(conn);
    if (!this.clients.delete(conn) || this.stopped) return;
    // The process is exiting or dead: reclaim what it held now (and once more
    // shortly, in case it was still being torn down).
    this.engine.reap();
    setTimeout(() => {
      if (!this.stopped) this.engine.reap();
    }, 100).unref();
  }
}

function byDcEpNode(a: PsRow, b: PsRow): number {
  return a.dc - b.dc || a.ep - b.ep || a.node - b.node;
}

function wireEntry(e: DirectoryEntry): WireEntry {
  return [e.dc, e.ep, e.gen, e.pid, e.name ?? ''];
}

/** A peer's ps answer: [dc, ep, gen, pid, msgsIn, msgsOut, name] rows (they crossed the network). */
function parsePsRows(x: unknown, node: number): PsRow[] | null {
  if (!Array.isArray(x) || x.length > MAX_PS_ROWS) return null;
  const out: PsRow[] = [];
  for (const r of x as unknown[]) {
    if (!Array.isArray(r) || r.length !== 7) return null;
    const [dc, ep, gen, pid, msgsIn, msgsOut, name] = r as unknown[];
    if (![dc, ep, gen, pid, msgsIn, msgsOut].every((v) => Number.isSafeInteger(v) && (v as number) >= 0)) return null;
    if ((dc as number) > 4095 || (ep as number) > 0xffffff || !isName(name)) return null;
    out.push({ dc: dc as number, ep: ep as number, where: 'remote', node, pid: pid as number, gen: gen as number, name, msgsIn: msgsIn as number, msgsOut: msgsOut as number });
  }
  return out;
}

function flatten(eps: readonly DirectoryEntry[]): Uint32Array {
  const a = new Uint32Array(eps.length * 4);
  eps.forEach((e, i) => a.set([e.dc, e.ep, e.gen, e.pid], i * 4));
  return a;
}

/** Embedded mode: an agent inside the calling process (tests, single-process tools). */
export function startAgent(config: AgentConfig, log?: Logger): Promise<Agent> {
  return Agent.start(config, log);
}
