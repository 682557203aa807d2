// cluster-helpers.ts — shared by the cluster-*.test.ts files (not a test
// itself): free UDP ports, node agents as real child processes (`dvs agent`)
// with guaranteed cleanup, waiting for links and remote endpoints through the
// agents' control sockets, and the CRC-32C of the UDP wire format.
import type { Agent } from '../lib/agent/agent.js';
import type { NativeEngine } from '../lib/native.js';
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { controlRequest } from '../lib/agent/control.js';
import { Child, ROOT, childEnv, shmFiles, sleep, within, type T } from './helpers.js';

export const CLI = join(ROOT, 'dist', 'lib', 'cli', 'main.js');

/** A UDP port that was free a moment ago on 127.0.0.1 (bind port 0, read it, close). */
export async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, '127.0.0.1', () => resolve());
  });
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** `n` distinct free UDP ports. */
export async function freeUdpPorts(n: number): Promise<number[]> {
  const out: number[] = [];
  while (out.length < n) {
    const p = await freeUdpPort();
    if (!out.includes(p)) out.push(p);
  }
  return out;
}

export interface AgentOptions {
  node: number;
  port: number;
  /** node -> UDP port on 127.0.0.1 */
  peers: Record<number, number>;
  ns: string;
  fault?: string;
  deadAfterMs?: number;
  heartbeatMs?: number;
  /** More CLI arguments (raw). */
  extra?: string[];
}

export function agentArgs(o: AgentOptions): string[] {
  const peers = Object.entries(o.peers)
    .map(([n, p]) => `${n}=127.0.0.1:${p}`)
    .join(',');
  const a = ['agent', '--node', String(o.node), '--listen', `127.0.0.1:${o.port}`, '--namespace', o.ns, '--log-level', 'warn'];
  if (peers) a.push('--peers', peers);
  if (o.fault) a.push('--fault', o.fault);
  if (o.deadAfterMs !== undefined) a.push('--dead-after-ms', String(o.deadAfterMs));
  if (o.heartbeatMs !== undefined) a.push('--heartbeat-ms', String(o.heartbeatMs));
  return [...a, ...(o.extra ?? [])];
}

/** Runs the CLI (`node dist/lib/cli/main.js ...args`) as a child; SIGKILLed on teardown if still running. */
export function spawnCli(t: T, name: string, args: string[]): Child {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npx tsc -p tsconfig.json\` first`);
  const c = new Child(name, [process.execPath, CLI, ...args], childEnv());
  t.teardown(async () => {
    if (!c.exited) {
      c.kill('SIGKILL');
      await c.exit(10000).catch(() => {});
    }
  });
  return c;
}

/** Runs the CLI to completion (bounded): exit status, stdout, stderr. */
export async function runCli(t: T, args: string[], ms = 20000): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  const c = spawnCli(t, `dvs ${args[0]}`, args);
  const lines: string[] = [];
  const reading = (async () => {
    for (;;) {
      try {
        lines.push(await c.line(ms));
      } catch {
        return;
      }
    }
  })();
  const e = await c.exit(ms);
  await reading;
  return { code: e.code, signal: e.signal, stdout: lines.join('\n'), stderr: c.stderr };
}

export interface AgentStatus {
  node: number;
  pid: number;
  incarnation: number;
  peers: { node: number; up: boolean; endpoints: number; incarnation: number }[];
}

/** A `dvs agent` child process. */
export class AgentProc {
  child!: Child;
  constructor(
    readonly t: T,
    readonly opts: AgentOptions,
  ) {}

  get node(): number {
    return this.opts.node;
  }
  get pid(): number {
    return this.child.pid;
  }

  /** Spawns it and waits (bounded) until its control socket answers 'status' from this very process. */
  async start(ms = 15000): Promise<this> {
    this.child = spawnCli(this.t, `agent ${this.opts.node}`, agentArgs(this.opts));
    const c = this.child;
    // Teardown: SIGTERM, then SIGKILL if it does not go within 5 s.
    this.t.teardown(async () => {
      if (c.exited) return;
      c.kill('SIGTERM');
      await c.exit(5000).catch(() => {});
      if (!c.exited) {
        c.kill('SIGKILL');
        await c.exit(5000).catch(() => {});
      }
    });
    const deadline = Date.now() + ms;
    for (;;) {
      if (c.exited) throw new Error(`agent ${this.opts.node} exited at start: ${c.stderr.trim()}`);
      try {
        const s = (await controlRequest(this.opts.ns, this.opts.node, 'status', {}, 2000)) as AgentStatus;
        if (s.pid === c.pid) return this;
      } catch {
        /* not listening yet */
      }
      if (Date.now() > deadline) throw new Error(`agent ${this.opts.node} did not answer within ${ms} ms; stderr: ${c.stderr.trim()}`);
      await sleep(25);
    }
  }

  request<R = unknown>(op: string, args: Record<string, unknown> = {}): Promise<R> {
    return controlRequest(this.opts.ns, this.opts.node, op, args, 5000) as Promise<R>;
  }

  status(): Promise<AgentStatus> {
    return this.request<AgentStatus>('status');
  }

  stats(): Promise<AgentStats> {
    return this.request<AgentStats>('stats');
  }

  /** SIGTERM and wait (bounded). */
  async stop(ms = 10000): Promise<{ code: number | null; signal: string | null }> {
    this.child.kill('SIGTERM');
    return this.child.exit(ms);
  }
}

export interface PeerStatsJson {
  node: number;
  up: boolean;
  msgsSent: number;
  msgsDelivered: number;
  dgramsSent: number;
  dgramsReceived: number;
  retransmits: number;
  dupDropped: number;
}
export interface AgentStats {
  forwarded: number;
  delivered: number;
  badFrames: number;
  transport: Record<string, number>;
  peers: PeerStatsJson[];
}

/** Polls the agent's 'status' until the listed peers (default all) are up. */
export async function waitPeersUp(a: AgentProc, nodes?: number[], ms = 15000): Promise<AgentStatus> {
  const deadline = Date.now() + ms;
  let last: AgentStatus | undefined;
  for (;;) {
    try {
      last = await a.status();
      const want = nodes ?? last.peers.map((p) => p.node);
      if (want.every((n) => last!.peers.find((p) => p.node === n)?.up)) return last;
    } catch {
      /* retry */
    }
    if (Date.now() > deadline) throw new Error(`node ${a.node}: peers not up within ${ms} ms: ${JSON.stringify(last?.peers)}`);
    await sleep(25);
  }
}

/** Starts a full mesh of agents on 127.0.0.1 (one per node id) and waits until every link is up. */
export async function startCluster(
  t: T,
  ns: string,
  nodes: number[],
  opts: Partial<Omit<AgentOptions, 'node' | 'port' | 'peers' | 'ns'>> & { perNode?: Record<number, Partial<AgentOptions>> } = {},
): Promise<AgentProc[]> {
  const ports = await freeUdpPorts(nodes.length);
  const portOf = (n: number): number => ports[nodes.indexOf(n)];
  const agents = nodes.map((n) => {
    const peers: Record<number, number> = {};
    for (const m of nodes) if (m !== n) peers[m] = portOf(m);
    const { perNode, ...common } = opts;
    const o: AgentOptions = { ...common, ...(perNode?.[n] ?? {}), node: n, port: portOf(n), peers: { ...peers, ...(perNode?.[n]?.peers ?? {}) }, ns };
    return new AgentProc(t, o);
  });
  await Promise.all(agents.map((a) => a.start()));
  for (const a of agents) await waitPeersUp(a, nodes.filter((n) => n !== a.node));
  return agents;
}

interface PsRow {
  dc: number;
  ep: number;
  where: 'local' | 'remote';
  node: number;
  pid: number;
}

/** Waits until node `a`'s agent lists (dc, ep) as a remote endpoint (i.e. the peer's announcement arrived). */
export async function waitRemote(a: AgentProc, dc: number, ep: number, ms = 15000): Promise<PsRow> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const r = await a.request<{ endpoints: PsRow[] }>('ps');
      const row = r.endpoints.find((e) => e.dc === dc && e.ep === ep && e.where === 'remote');
      if (row) return row;
    } catch {
      /* retry */
    }
    if (Date.now() > deadline) throw new Error(`node ${a.node}: endpoint ${dc}:${ep} not announced within ${ms} ms`);
    await sleep(25);
  }
}

/** Retries `f` while it fails with one of `codes` (bounded); returns its result. */
export async function retryWhile<R>(f: () => Promise<R>, codes: string[], ms = 15000, what = 'operation'): Promise<R> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await f();
    } catch (e) {
      const code = (e as { code?: string }).code ?? '';
      if (!codes.includes(code) || Date.now() > deadline) throw e;
    }
    await sleep(25);
  }
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** CRC-32C (Castagnoli, reflected), as native/net/crc32c.cc. */
export function crc32c(u8: Uint8Array, start = 0, end = u8.length): number {
  let c = ~0 >>> 0;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ u8[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** Stores the CRC of a datagram (bytes [4, len)) at offset 0, as wire::seal. */
export function seal(d: Uint8Array): Uint8Array {
  new DataView(d.buffer, d.byteOffset, d.byteLength).setUint32(0, crc32c(d, 4), true);
  return d;
}

export { within };

/** Polls `f` until it returns a value other than undefined/false (bounded); returns it. */
export async function pollUntil<R>(f: () => Promise<R | undefined | false> | R | undefined | false, ms: number, what: string): Promise<R> {
  const deadline = Date.now() + ms;
  let lastErr: unknown;
  for (;;) {
    try {
      const r = await f();
      if (r !== undefined && r !== false) return r as R;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${ms} ms${lastErr ? ` (last error: ${(lastErr as Error).message})` : ''}`);
    await sleep(20);
  }
}

/**
 * Agents with embedded membership (`--seeds`: the first id is the seed), as
 * child processes; resolves once every agent sees every member alive.
 */
export async function startSeeded(t: T, ns: string, ids: number[], extra: (node: number) => string[] = () => []): Promise<AgentProc[]> {
  const ports = await freeUdpPorts(ids.length);
  const seed = `${ids[0]}=127.0.0.1:${ports[0]}`;
  const agents = ids.map((n, i) => new AgentProc(t, { node: n, port: ports[i], peers: {}, ns, extra: ['--seeds', seed, ...extra(n)] }));
  await agents[0].start();
  await Promise.all(agents.slice(1).map((a) => a.start()));
  await pollUntil(
    async () => {
      const views = await Promise.all(agents.map((a) => a.request<{ members: { node: number; state: string }[] }>('nodes')));
      return views.every((v) => ids.every((n) => v.members.some((m) => m.node === n && m.state === 'alive'))) || undefined;
    },
    20000,
    `all of ${ids.join(',')} alive on every agent`,
  );
  return agents;
}

/** The native engine of an embedded agent (white-box tests of the data plane). */
export function engineOf(a: Agent): NativeEngine {
  return (a as unknown as { engine: NativeEngine }).engine;
}

/** Waits (polling every 10 ms) until f() holds; throws naming `what` after `ms`. */
export async function until(what: string, f: () => boolean, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}
