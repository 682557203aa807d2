// config.ts — the agent's configuration: from CLI flags, a JSON config file, or code.
import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { DvsError } from '../errors.js';
import type { FaultOptions } from '../native.js';
import type { LogLevel } from './log.js';
import { parseEtcdUrl } from '../registry/etcd/url.js';

export interface HostPort {
  host: string;
  port: number;
}

export interface PeerAddress extends HostPort {
  node: number;
}

export interface DcSpec {
  dc: number;
  nodes: number[];
}

export interface AgentConfig {
  /** This node's number (0..1023). */
  node: number;
  /** UDP address of this agent's transport. */
  listen: HostPort;
  /** The other agents of the cluster. */
  peers: PeerAddress[];
  /**
   * Embedded membership: agents to join through (may include this node; none
   * but itself, or an empty list, forms a new cluster). Without it the agent
   * runs with static `peers` only, as before.
   */
  seeds?: PeerAddress[];
  /**
   * Registry backend: 'etcd://host:port[,host:port...][?ttl=S]' keeps membership
   * (etcd leases, TTL 2 s by default), the endpoint directory and the DC table in
   * etcd. Unset: embedded (with seeds) or static peers.
   */
  registry?: string;
  /** Membership: a member whose link is down this long after the transport declared it down is dead (ms, default 500). */
  suspectMs?: number;
  /** DCs and the nodes they span (informational until the directory enforces them). */
  dcs?: DcSpec[];
  /** Arena namespace (default $DVS_NAMESPACE or "default"). */
  namespace?: string;
  /** Fault injection in the transport (also $DVS_FAULT, e.g. "loss=0.1,dup=0.05,reorder=0.05,delay_us=200"). */
  fault?: FaultOptions;
  /** Idle keepalive period (ms, default 100). */
  heartbeatMs?: number;
  /** A peer silent this long is down: waiting calls fail with EDVSNOTCONN (ms, default 1500; 1000 with seeds). */
  deadAfterMs?: number;
  /** Max UDP payload per datagram (default 1472). */
  mtu?: number;
  /** Unacknowledged bytes in flight per peer (default 4 MiB). */
  windowBytes?: number;
  /** The engine polls this long after activity before sleeping (µs, default 0). */
  spinUs?: number;
  /**
   * Embedded mode only: no engine thread — the calling process's event loop and
   * its blocking waits drive the engine (no thread hand-off on the data path;
   * the lowest latency when one process per node does the messaging). Default false.
   */
  invoker?: boolean;
  /** Arena sizing (the agent creates the node's arena). */
  maxProcs?: number;
  maxEndpoints?: number;
  inboxCells?: number;
  replyCells?: number;
  poolMib?: number;
  logLevel?: LogLevel;
}

export function parseHostPort(s: string, what: string): HostPort {
  const m = /^([0-9.]+):(\d{1,5})$/.exec(s.trim());
  if (!m || !isIPv4(m[1]) || Number(m[2]) > 65535)
    throw new DvsError('EDVSINVAL', `${what} must be <ipv4>:<port>, got '${s}'`);
  return { host: m[1], port: Number(m[2]) };
}

function nodeId(s: string | number, what: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0 || n > 1023) throw new DvsError('EDVSBADNODEID', `${what}: node must be in [0, 1023], got '${s}'`);
  return n;
}

/** "2=127.0.0.1:7002,3=127.0.0.1:7003" */
export function parsePeers(s: string, flag = '--peers'): PeerAddress[] {
  if (!s.trim()) return [];
  return s.split(',').map((part) => {
    const eq = part.indexOf('=');
    if (eq < 0) throw new DvsError('EDVSINVAL', `${flag} entries are <node>=<ipv4>:<port>, got '${part}'`);
    return { node: nodeId(part.slice(0, eq), flag), ...parseHostPort(part.slice(eq + 1), `${flag} address`) };
  });
}

/** "1:1,2,3" (one DC spanning nodes 1, 2, 3); several with ';' or repeated flags. */
export function parseDcs(s: string): DcSpec[] {
  return s
    .split(';')
    .filter((x) => x.trim())
    .map((part) => {
      const m = /^(\d+):([\d,]+)$/.exec(part.trim());
      if (!m) throw new DvsError('EDVSINVAL', `--dc is <dc>:<node>,<node>..., got '${part}'`);
      const dc = Number(m[1]);
      if (dc > 4095) throw new DvsError('EDVSBADDCID', `dc must be in [0, 4095], got ${dc}`);
      return { dc, nodes: m[2].split(',').filter(Boolean).map((n) => nodeId(n, '--dc')) };
    });
}

/** "loss=0.1,dup=0.05,reorder=0.05,delay_us=100,jitter_us=50,seed=7" */
export function parseFault(s: string): FaultOptions {
  const f: Record<string, number> = {};
  const keys: Record<string, keyof FaultOptions> = { loss: 'loss', dup: 'dup', reorder: 'reorder', delay_us: 'delayUs', jitter_us: 'jitterUs', seed: 'seed' };
  for (const part of s.split(',').filter((x) => x.trim())) {
    const [k, v] = part.split('=');
    const key = keys[k?.trim() ?? ''];
    const n = Number(v);
    if (!key || v === undefined || !Number.isFinite(n) || n < 0) throw new DvsError('EDVSINVAL', `fault spec entries are loss|dup|reorder|delay_us|jitter_us|seed=<number>, got '${part}'`);
    if ((key === 'loss' || key === 'dup' || key === 'reorder') && n > 1) throw new DvsError('EDVSINVAL', `${k} is a probability in [0, 1]`);
    f[key] = n;
  }
  return f as FaultOptions;
}

/** Checks a config built in code or read from a file; fills nothing in (the agent applies defaults). */
export function checkConfig(c: AgentConfig): AgentConfig {
  if (typeof c !== 'object' || c === null) throw new DvsError('EDVSINVAL', 'agent config must be an object');
  nodeId(c.node, 'node');
  if (!c.listen || !isIPv4(c.listen.host) || !Number.isInteger(c.listen.port) || c.listen.port < 0 || c.listen.port > 65535)
    throw new DvsError('EDVSINVAL', 'listen must be { host: <ipv4>, port }');
  if (!Array.isArray(c.peers)) throw new DvsError('EDVSINVAL', 'peers must be an array');
  const seen = new Set<number>([c.node]);
  for (const p of c.peers) {
    nodeId(p.node, 'peers');
    if (seen.has(p.node)) throw new DvsError('EDVSBADNODEID', `node ${p.node} appears twice (or is this node)`);
    seen.add(p.node);
    if (!isIPv4(p.host) || !Number.isInteger(p.port) || p.port <= 0 || p.port > 65535)
      throw new DvsError('EDVSINVAL', `peer ${p.node}: address must be an IPv4 host and a port`);
  }
  if (c.seeds !== undefined) {
    if (!Array.isArray(c.seeds)) throw new DvsError('EDVSINVAL', 'seeds must be an array');
    const s = new Set<number>();
    for (const p of c.seeds) {
      nodeId(p.node, 'seeds');
      if (s.has(p.node)) throw new DvsError('EDVSBADNODEID', `seed ${p.node} appears twice`);
      s.add(p.node);
      if (!isIPv4(p.host) || !Number.isInteger(p.port) || p.port <= 0 || p.port > 65535)
        throw new DvsError('EDVSINVAL', `seed ${p.node}: address must be an IPv4 host and a port`);
    }
  }
  if (c.registry !== undefined) {
    if (typeof c.registry !== 'string') throw new DvsError('EDVSINVAL', 'registry must be a string such as etcd://127.0.0.1:2379');
    parseEtcdUrl(c.registry);
    if (c.seeds !== undefined) throw new DvsError('EDVSINVAL', 'registry and seeds exclude each other (etcd keeps the membership)');
  }
  for (const k of ['suspectMs', 'heartbeatMs', 'deadAfterMs', 'mtu', 'windowBytes', 'spinUs', 'maxProcs', 'maxEndpoints', 'inboxCells', 'replyCells', 'poolMib'] as const) {
    const v = c[k];
    if (v !== undefined && (!Number.isInteger(v) || v < 0)) throw new DvsError('EDVSINVAL', `${k} must be a non-negative integer`);
  }
  if (c.invoker !== undefined && typeof c.invoker !== 'boolean') throw new DvsError('EDVSINVAL', 'invoker must be a boolean');
  if (c.mtu !== undefined && (c.mtu < 576 || c.mtu > 65507)) throw new DvsError('EDVSINVAL', 'mtu must be in [576, 65507]');
  return c;
}

/** The config file (JSON, the AgentConfig shape, peers as objects or as the --peers string). */
export function readConfigFile(path: string): Partial<AgentConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new DvsError('EDVSINVAL', `cannot read config ${path}: ${(e as Error).message}`);
  }
  const c = raw as Record<string, unknown>;
  const out: Record<string, unknown> = { ...c };
  if (typeof c.listen === 'string') out.listen = parseHostPort(c.listen, 'listen');
  if (typeof c.peers === 'string') out.peers = parsePeers(c.peers);
  if (typeof c.seeds === 'string') out.seeds = parsePeers(c.seeds, 'seeds');
  if (typeof c.dc === 'string') out.dcs = parseDcs(c.dc);
  if (typeof c.fault === 'string') out.fault = parseFault(c.fault);
  return out as Partial<AgentConfig>;
}
