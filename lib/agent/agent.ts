// agent.ts — the node agent: owns the node's arena, runs the data-plane engine
// (native thread: proxies <-> reliable UDP), keeps the directory of remote
// endpoints in the arena, and serves the control socket. Runs as `dvs agent`
// (its own process) or embedded in the calling process (`startAgent`).
import { AnnounceDirectory } from '../directory/announce.js';
import type { Directory, DirectoryEntry } from '../directory/directory.js';
import { DvsError } from '../errors.js';
import { EmbeddedMembership } from '../membership/embedded.js';
import type { Member, Membership, View } from '../membership/membership.js';
import { binding, EngineEvent, type EngineEndpoint, type FaultOptions, type NativeEngine } from '../native.js';
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
  peers: PeerStatus[];
  dcs: { dc: number; nodes: number[] }[];
  clients: number;
}

export interface NodeRow extends Member {
  /** Endpoints bound on that node as this node's directory knows them. */
  endpoints: number;
}

export interface NodesResult {
  node: number;
  namespace: string;
  /** 'embedded' (membership from --seeds) or 'static' (--peers only: view number 0, states from the links). */
  mode: 'embedded' | 'static';
  view: number;
  members: NodeRow[];
}

export interface PsRow {
  dc: number;
  ep: number;
  where: 'local' | 'remote';
  node: number;
  pid: number;
  msgsIn: number;
  msgsOut: number;
}

/** Membership mode defaults: transport deadAfterMs, then suspect → dead (detection 1.5 s). */
const MEMBERSHIP_DEAD_AFTER_MS = 1000;
const SUSPECT_MS = 500;

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

export class Agent {
  readonly node: number;
  readonly namespace: string;
  readonly incarnation: number;
  /** The UDP port the transport is bound to (useful with listen port 0). */
  readonly port: number;
  private readonly engine: NativeEngine;
  private readonly directory: Directory;
  private readonly peers = new Map<number, PeerState>();
  private readonly clients = new Set<ControlConnection>();
  private control: ControlServer | null = null;
  private readonly startedAt = new Date();
  private stopped = false;
  private peerWaiters: (() => void)[] = [];
  /** Embedded membership (when `seeds` is configured); null with static peers only. */
  readonly membership: Membership | null = null;
  private readonly embedded: EmbeddedMembership | null = null;

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
    this.directory = new AnnounceDirectory({
      send: (node, msg) => this.sendControl(node, msg),
      apply: (node, eps) => {
        this.log('debug', 'remote endpoints', { peer: node, endpoints: eps.length });
        this.engine.setRemote(node, flatten(eps));
      },
      peersUp: () => [...this.peers.values()].filter((p) => p.up).map((p) => p.addr.node),
      warn: (msg, fields) => this.log('warn', msg, fields),
    });
    if (cfg.seeds) {
      this.embedded = new EmbeddedMembership(
        {
          node: cfg.node,
          host: cfg.listen.host,
          port: this.port,
          incarnation: this.incarnation,
          seeds: [...cfg.seeds, ...cfg.peers],
          deadAfterMs: cfg.deadAfterMs ?? MEMBERSHIP_DEAD_AFTER_MS,
          suspectMs: cfg.suspectMs ?? SUSPECT_MS,
        },
        {
          addPeer: (node, host, port) => this.addPeer({ node, host, port }),
          removePeer: (node) => {
            if (!this.peers.delete(node)) return;
            this.engine.removePeer(node);
            this.directory.forget(node);
          },
          forget: (node) => {
            this.engine.setRemote(node, new Uint32Array(0));
            this.directory.forget(node);
          },
          send: (node, msg) => this.sendControl(node, msg),
          log: this.log,
        },
      );
      this.membership = this.embedded;
    }
  }

  private addPeer(p: PeerAddress): void {
    const cur = this.peers.get(p.node);
    if (cur && cur.addr.host === p.host && cur.addr.port === p.port) return;
    if (cur) cur.addr = p;
    else this.peers.set(p.node, { addr: p, up: false, incarnation: 0, since: Date.now() });
    this.engine.addPeer(p.node, p.host, p.port);
  }

  /** Starts an agent: arena, engine thread, peers, control socket. */
  static async start(config: AgentConfig, log?: Logger): Promise<Agent> {
    const cfg = checkConfig(config);
    const logger = log ?? jsonLogger(cfg.node, cfg.logLevel ?? 'info');
    const a = new Agent(cfg, logger);
    try {
      a.control = new ControlServer(
        controlPath(a.namespace, a.node),
        (req, conn) => a.handle(req, conn),
        (conn) => a.clientGone(conn),
      );
      await a.control.listen();
    } catch (e) {
      a.engine.close();
      throw e;
    }
    for (const p of cfg.peers) a.addPeer(p);
    if (a.embedded) {
      try {
        await a.embedded.start();
      } catch (e) {
        await a.control.close();
        a.engine.close();
        throw e;
      }
    }
    running.add(a);
    if (!exitHook) {
      exitHook = true;
      process.on('exit', () => {
        for (const r of running) r.closeNow();
      });
    }
    logger('info', 'agent started', {
      namespace: a.namespace,
      listen: `${cfg.listen.host}:${a.port}`,
      peers: cfg.peers.map((p) => `${p.node}=${p.host}:${p.port}`),
      incarnation: a.incarnation,
      membership: cfg.seeds ? { seeds: cfg.seeds.map((p) => `${p.node}=${p.host}:${p.port}`), deadAfterMs: cfg.deadAfterMs ?? MEMBERSHIP_DEAD_AFTER_MS, suspectMs: cfg.suspectMs ?? SUSPECT_MS } : undefined,
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
      peers: [...this.peers.values()].map((p) => ({
        node: p.addr.node,
        address: `${p.addr.host}:${p.addr.port}`,
        up: p.up,
        incarnation: p.incarnation,
        endpoints: remote.get(p.addr.node)?.length ?? 0,
        since: p.since,
      })),
      dcs: this.cfg.dcs ?? [],
      clients: this.clients.size,
    };
  }

  /** The cluster's members as this node sees them, with the endpoints its directory knows per node. */
  nodes(): NodesResult {
    const remote = this.directory.remote();
    const local = this.engine.endpoints().filter((e) => !e.remote).length;
    const count = (n: number): number => (n === this.node ? local : (remote.get(n)?.length ?? 0));
    let v: View;
    if (this.membership) v = this.membership.view();
    else
      v = {
        number: 0,
        members: [
          { node: this.node, address: `${this.cfg.listen.host}:${this.port}`, incarnation: this.incarnation, state: 'alive' as const },
          ...[...this.peers.values()].map((p) => ({ node: p.addr.node, address: `${p.addr.host}:${p.addr.port}`, incarnation: p.incarnation, state: p.up ? ('alive' as const) : ('suspect' as const) })),
        ].sort((a, b) => a.node - b.node),
      };
    return {
      node: this.node,
      namespace: this.namespace,
      mode: this.membership ? 'embedded' : 'static',
      view: v.number,
      members: v.members.map((m) => ({ ...m, endpoints: m.state === 'dead' || m.state === 'left' ? 0 : count(m.node) })),
    };
  }

  /** The node's endpoint table: local endpoints and proxies for remote ones. */
  ps(): PsRow[] {
    return this.engine.endpoints().map((e: EngineEndpoint) => ({
      dc: e.dc,
      ep: e.ep,
      where: e.remote ? 'remote' : 'local',
      node: e.node,
      pid: e.pid,
      msgsIn: e.msgsIn,
      msgsOut: e.msgsOut,
    }));
  }

  /** Engine and transport counters (per peer: RTT, retransmits, window...). */
  stats(): Record<string, unknown> {
    return JSON.parse(this.engine.stats()) as Record<string, unknown>;
  }

  /** Changes fault injection at run time (all zero: off). */
  setFault(f: FaultOptions): void {
    this.engine.setFault(f);
    this.log('info', 'fault injection', { ...f });
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
    await this.embedded?.leave();
    if (this.stopped) return;
    this.stopped = true;
    running.delete(this);
    await this.control?.close();
    this.engine.close();
    this.log('info', 'agent stopped', {});
  }

  /** Synchronous teardown at process exit. */
  private closeNow(): void {
    this.stopped = true;
    this.embedded?.stop();
    running.delete(this);
    this.engine.close();
  }

  private sendControl(node: number, msg: object): void {
    this.log('debug', 'control out', { peer: node, t: (msg as { t?: string }).t });
    this.engine.sendControl(node, Buffer.from(JSON.stringify(msg)));
  }

  private onEvent(type: number, peer: number, inc: number, data: Buffer | string | undefined): void {
    if (this.stopped) return;
    switch (type) {
      case EngineEvent.PeerUp: {
        const p = this.peers.get(peer);
        if (p) Object.assign(p, { up: true, incarnation: inc, since: Date.now() });
        this.log('info', 'peer up', { peer, incarnation: inc });
        this.directory.peerUp(peer);
        if (p) this.embedded?.peerUp(peer, inc, `${p.addr.host}:${p.addr.port}`);
        for (const w of this.peerWaiters.splice(0)) w();
        break;
      }
      case EngineEvent.PeerDown: {
        // (logged below at warn)
        const p = this.peers.get(peer);
        if (p) Object.assign(p, { up: false, since: Date.now() });
        this.log('warn', 'peer down', { peer });
        this.directory.peerDown(peer);
        this.embedded?.peerDown(peer);
        break;
      }
      case EngineEvent.Control: {
        let msg: unknown;
        try {
          msg = JSON.parse(String(data));
        } catch {
          this.log('warn', 'malformed control message', { peer });
          return;
        }
        const k = (msg as { k?: unknown }).k;
        if (k === 'dir') this.directory.receive(peer, msg);
        else if (k === 'mem') {
          if (this.embedded) this.embedded.receive(peer, msg);
          else this.log('warn', 'membership message from a peer, but this agent has static peers only (no --seeds)', { peer });
        }
        break;
      }
      case EngineEvent.BindsChanged:
        this.directory.localChanged(this.localEndpoints());
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
      .map((e) => ({ dc: e.dc, ep: e.ep, gen: e.gen, pid: e.pid }))
      .sort((a, b) => a.dc - b.dc || a.ep - b.ep);
  }

  private handle(req: ControlRequest, conn: ControlConnection): unknown {
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
      case 'ps':
        return { node: this.node, endpoints: this.ps() };
      case 'stats':
        return this.stats();
      case 'nodes':
        return this.nodes();
      case 'fault': {
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
    if (!this.clients.delete(conn) || this.stopped) return;
    // The process is exiting or dead: reclaim what it held now (and once more
    // shortly, in case it was still being torn down).
    this.engine.reap();
    setTimeout(() => {
      if (!this.stopped) this.engine.reap();
    }, 100).unref();
  }
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
