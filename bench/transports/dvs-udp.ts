/**
 * The dvs cluster rows of the `udp` suite: two agents on this machine talking
 * reliable UDP over 127.0.0.1, the harness attached to node 1 as the client
 * (endpoint 0/2) and a peer process (`peers/dvs-udp.ts`) attached to node 2
 * as the echo server or sink (endpoint 0/1).
 *
 * - `dvs-udp`: two `dvs agent` child processes (each with its engine thread:
 *   the default deployment), async API (call / send promises, the event loop).
 * - `dvs-udp-embedded`: no agent processes; each side embeds its node's agent
 *   in invoker mode (`startAgent({ invoker: true })`: no engine thread, the
 *   process's event loop, its async polling and its blocking waits run the
 *   transport). The harness embeds node 1's agent, the peer node 2's. Async API.
 * - `dvs-udp-spin`: embedded invoker agents as `dvs-udp-embedded`; RTT with
 *   callSync / receiveSync spinning without limit (spinUs: Infinity) on both
 *   sides, so each spinning wait runs its node's engine; throughput: the sink
 *   spins in receiveSync, the sender streams as the other rows do.
 * - `dvs-udp-loss5`: `dvs-udp` with `--fault loss=0.05` on both agents (each
 *   datagram, data and acks alike, is dropped with probability 5 % on send).
 * - `dvs-udp-embedded-loss5`: `dvs-udp-embedded` with the same fault injection.
 *
 * Every trial (one rtt() or throughput() call) starts its own agents (fresh
 * namespace, free ports), waits until both see their peer up and the server
 * endpoint answers a call (the directory has propagated; EDVSNOTBIND until
 * then), measures, reads the agents' 'stats', then tears everything down and
 * checks that /dev/shm/dvs.<ns>.* is gone. Separate agents: harness detaches,
 * peer killed, agents SIGTERMed (SIGKILLed if they linger). Embedded agents:
 * an embedded agent's control plane (announcing local endpoints to peers,
 * applying theirs) runs in JS on its process's event loop, so the harness
 * also waits until node 2 lists node 1's endpoint, and the spinning peer only
 * enters its synchronous loop after answering the harness's first call (by
 * then its endpoint is announced). At the end the harness sends a "quit" call
 * (2 bytes) that ends the peer's spin loop, reads node 1's stats in-process and
 * node 2's over its control socket, asks the peer (IPC) to detach and stop its
 * agent, then detaches and stops node 1's agent; the peer is killed after.
 *
 * `lost` (must be 0): RTT, replies that did not carry the request's sequence
 * number; throughput, data messages the sender sent (all acknowledged by
 * node 2 once the end marker's send resolved) that the sink never received, from the
 * sequence numbers the sink checks (u32 in the first 4 bytes). Duplicates,
 * reordering, gaps or failed sends fail the trial instead. `retransmits`:
 * the sum of the agents' per-peer transport retransmit counters at the end of
 * the trial (warm-up included).
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { readdirSync, unlinkSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { attach, startAgent, type Agent, type AgentConfig, type Endpoint } from '../../lib/index.js';
import { parseFault } from '../../lib/agent/config.js';
import { controlRequest } from '../../lib/agent/control.js';
import { withProcessPeer, type Peer } from '../peer.js';
import { checkReply, checkSink, makePayload, type Role, type SinkResult } from '../protocol.js';
import { timeRoundTrips, timeRoundTripsSync } from '../rtt.js';
import { streamMeasured } from '../stream.js';
import type { RttResult, ThroughputOptions, ThroughputResult, Transport } from '../transport.js';

type Mode = 'async' | 'spin';

interface Variant {
  readonly name: string;
  readonly mode: Mode;
  /** `process`: two `dvs agent` child processes; `embedded`: each side embeds its node's agent in invoker mode. */
  readonly agents: 'process' | 'embedded';
  /** Fault injection on both agents (`--fault` syntax), if any. */
  readonly fault?: string;
}

/**
 * How long the spinning waits of `dvs-udp-spin` busy-poll before sleeping:
 * without limit. With invoker agents a spinning callSync / receiveSync runs
 * its node's engine itself, so a round trip is two thread wake-ups at most
 * (none while both sides spin). History: with separate `dvs agent` processes
 * (engine threads, `--spin-us`) spinning made RTT worse, not better, on this
 * 2-core VM (2026-11-25, quick runs, RTT p50 @ 64 B, agent,client,server µs
 * budgets: 0,0,0 127-144 · 0,20,20 165-197 · 0,∞,∞ 223 · 1000,∞,∞ 5352):
 * four threads (client, server, two engines) shared 2 cores, and every
 * spinner stole the core of the thread it waited for.
 */
const SPIN_US = Infinity;

/** The call payload length that ends the peer's spin loop (RTT and data messages are >= 4 B, end markers 0 B). */
const QUIT_BYTES = 2;

const MAIN_JS = fileURLToPath(new URL('../../lib/cli/main.js', import.meta.url));
const SERVER_EP = 1;
const CLIENT_EP = 2;
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 3_000;
/** The engine refreshes the stats it serves every 50 ms. */
const STATS_SETTLE_MS = 120;
const STDERR_TAIL = 2000;
let trials = 0;

// ------------------------------------------------------------------ agents

/** The line naming the error in an agent's stderr (a thrown Error or the logger's JSON line), else its last line. */
export function errorLine(stderr: string): string {
  const lines = stderr.split('\n').map((line) => line.trim()).filter((line) => line !== '');
  return lines.find((line) => /^[A-Za-z]*Error\b/.test(line)) ?? [...lines].reverse().find((line) => /"level":"error"/.test(line)) ?? lines.at(-1) ?? '';
}

/** `n` UDP ports on 127.0.0.1 that were free a moment ago (held together, so distinct). */
export async function freeUdpPorts(n: number): Promise<number[]> {
  const sockets: Socket[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createSocket('udp4');
      sockets.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind(0, '127.0.0.1', resolve);
      });
    }
    return sockets.map((s) => s.address().port);
  } finally {
    await Promise.all(sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

interface Cluster {
  readonly namespace: string;
  /** Rejects when an agent exits before stop(). */
  readonly died: Promise<never>;
  /** Sum of the retransmit counters of both agents' transports. */
  retransmits(): Promise<number>;
  stop(): Promise<void>;
}

interface PeerStatsJson {
  retransmits?: number;
}

/** A namespace of its own for each trial. */
function newNamespace(): string {
  return `bench-udp-${process.pid}-${trials++}`;
}

/** SIGTERM to an agent process that still runs; SIGKILL if it has not exited after STOP_TIMEOUT_MS. Resolves once it exited. */
export async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

/** Removes what is left of the namespace's arenas; throws if there was anything. */
export function checkShmGone(namespace: string): void {
  const prefix = `dvs.${namespace}.`;
  const left = readdirSync('/dev/shm').filter((f) => f.startsWith(prefix));
  for (const f of left) unlinkSync(`/dev/shm/${f}`);
  if (left.length > 0) throw new Error(`teardown left /dev/shm/${left.join(', /dev/shm/')} (removed)`);
}

/** Sums the per-peer retransmit counters of an agent's 'stats'. */
function statsRetransmits(stats: unknown): number {
  let total = 0;
  for (const p of (stats as { peers?: PeerStatsJson[] }).peers ?? []) total += p.retransmits ?? 0;
  return total;
}

async function startCluster(agentArgs: readonly string[]): Promise<Cluster> {
  const namespace = newNamespace();
  const [p1, p2] = await freeUdpPorts(2);
  const procs: ChildProcess[] = [];
  let stopping = false;
  const diedWith: Promise<never>[] = [];
  const spawnAgent = (node: number, port: number, peer: number, peerPort: number): void => {
    const child = spawn(
      process.execPath,
      [MAIN_JS, 'agent', '--node', String(node), '--listen', `127.0.0.1:${port}`, '--peers', `${peer}=127.0.0.1:${peerPort}`,
        '--namespace', namespace, '--log-level', 'warn', ...agentArgs],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (text: string) => {
      stderr = (stderr + text).slice(-STDERR_TAIL);
    });
    procs.push(child);
    const died = new Promise<never>((_, reject) => {
      child.on('error', (err) => reject(new Error(`agent ${node} failed: ${err.message}`)));
      child.on('close', (code, signal) => {
        if (!stopping) reject(new Error(`agent ${node} exited (${signal ?? `code ${code}`}): ${errorLine(stderr)}`));
      });
    });
    died.catch(() => {});
    diedWith.push(died);
  };
  spawnAgent(1, p1, 2, p2);
  spawnAgent(2, p2, 1, p1);
  const died = Promise.race(diedWith);
  died.catch(() => {});

  const stop = async (): Promise<void> => {
    stopping = true;
    await Promise.all(procs.map(terminate));
    checkShmGone(namespace);
  };

  const retransmits = async (): Promise<number> => {
    await sleep(STATS_SETTLE_MS);
    let total = 0;
    for (const node of [1, 2]) total += statsRetransmits(await controlRequest(namespace, node, 'stats'));
    return total;
  };

  try {
    await Promise.race([waitForPeers(namespace), died]);
  } catch (err) {
    await stop().catch(() => {});
    throw err;
  }
  return { namespace, died, retransmits, stop };
}

/** Polls both agents' 'status' until each sees its peer up. */
async function waitForPeers(namespace: string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last = 'no answer yet';
  for (;;) {
    let up = 0;
    for (const node of [1, 2]) {
      try {
        const s = (await controlRequest(namespace, node, 'status', {}, 1000)) as { peers: { up: boolean }[] };
        if (s.peers.length > 0 && s.peers.every((p) => p.up)) up++;
        else last = `node ${node}: peer not up`;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
      }
    }
    if (up === 2) return;
    if (Date.now() > deadline) throw new Error(`agents not up within ${START_TIMEOUT_MS} ms (${last})`);
    await sleep(20);
  }
}

/** Retries a call to the server until it answers (the directory has reached node 1). */
async function waitReachable(ep: Endpoint, signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    signal.throwIfAborted();
    try {
      const r = await ep.call(SERVER_EP, new Uint8Array(8), { timeoutMs: 1000 });
      r.release();
      return;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (Date.now() > deadline) throw new Error(`server endpoint not reachable within ${START_TIMEOUT_MS} ms: ${String(err)}`);
      if (code !== 'EDVSNOTBIND' && code !== 'EDVSTIMEDOUT' && code !== 'EDVSNOTCONN') throw err;
      await sleep(10);
    }
  }
}

/** Polls node 2's 'status' until it lists node 1's endpoints (its control plane applied node 1's announcement). */
async function waitNode2SeesClient(namespace: string, signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    signal.throwIfAborted();
    const s = (await controlRequest(namespace, 2, 'status', {}, 1000)) as { peers: { node: number; endpoints: number }[] };
    if (s.peers.some((p) => p.node === 1 && p.endpoints > 0)) return;
    if (Date.now() > deadline) throw new Error(`node 2 did not list node 1's endpoint within ${START_TIMEOUT_MS} ms`);
    await sleep(10);
  }
}

/**
 * One trial: agents, the harness attached to node 1 (endpoint CLIENT_EP),
 * the peer attached to node 2 (SERVER_EP); `fn` runs once the server answers.
 * Returns `fn`'s result and the agents' retransmit count.
 */
function withCluster<T>(
  v: Variant,
  role: Role,
  fn: (ep: Endpoint, peer: Peer<ChildProcess>) => Promise<T>,
): Promise<{ value: T; retransmits: number }> {
  return v.agents === 'embedded' ? withEmbeddedCluster(v, role, fn) : withProcessCluster(v, role, fn);
}

/** Peer arguments: role, mode, namespace, endpoint, spin µs, node 2's embedded agent config (JSON) or '-'. */
function peerArgs(v: Variant, role: Role, namespace: string, agent: AgentConfig | undefined): string[] {
  return [role, v.mode, namespace, String(SERVER_EP), String(SPIN_US), agent === undefined ? '-' : JSON.stringify(agent)];
}

async function withProcessCluster<T>(
  v: Variant,
  role: Role,
  fn: (ep: Endpoint, peer: Peer<ChildProcess>) => Promise<T>,
): Promise<{ value: T; retransmits: number }> {
  const cluster = await startCluster(v.fault === undefined ? [] : ['--fault', v.fault]);
  let result: { value: T; retransmits: number } | undefined;
  try {
    const node = attach({ node: 1, namespace: cluster.namespace, create: false });
    try {
      result = await withProcessPeer('dvs-udp', peerArgs(v, role, cluster.namespace, undefined), 'json', async (peer) => {
        const ep = node.bind(0, CLIENT_EP);
        const run = async (): Promise<{ value: T; retransmits: number }> => {
          await waitReachable(ep, peer.signal);
          const value = await fn(ep, peer);
          return { value, retransmits: await cluster.retransmits() };
        };
        return Promise.race([run(), cluster.died]);
      });
    } finally {
      node.detach();
    }
  } finally {
    await cluster.stop();
  }
  return result;
}

/** Asks the peer (IPC) to detach and stop its embedded agent; resolves on its 'stopped' message. */
function stopPeerAgent(child: ChildProcess): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onMessage = (msg: unknown): void => {
      if ((msg as { kind?: unknown } | null)?.kind !== 'stopped') return;
      clearTimeout(timer);
      child.off('message', onMessage);
      resolve();
    };
    const timer = setTimeout(() => {
      child.off('message', onMessage);
      reject(new Error(`peer did not stop its agent within ${STOP_TIMEOUT_MS} ms`));
    }, STOP_TIMEOUT_MS);
    child.on('message', onMessage);
    child.send({ kind: 'stop' });
  });
}

/**
 * A trial with embedded invoker agents: node 1's in this process, node 2's in
 * the peer. The harness's event loop runs node 1's control plane (and, while
 * it awaits, its transport), so nothing here blocks it before the server has
 * answered; `fn` may (callSync spinning), which also runs node 1's engine.
 */
async function withEmbeddedCluster<T>(
  v: Variant,
  role: Role,
  fn: (ep: Endpoint, peer: Peer<ChildProcess>) => Promise<T>,
): Promise<{ value: T; retransmits: number }> {
  const namespace = newNamespace();
  const [p1, p2] = await freeUdpPorts(2);
  const fault = v.fault === undefined ? {} : { fault: parseFault(v.fault) };
  const config = (node: number, port: number, peer: number, peerPort: number): AgentConfig => ({
    node,
    invoker: true,
    listen: { host: '127.0.0.1', port },
    peers: [{ node: peer, host: '127.0.0.1', port: peerPort }],
    namespace,
    logLevel: 'warn',
    ...fault,
  });
  let result: { value: T; retransmits: number } | undefined;
  let failed = false;
  try {
    const agent: Agent = await startAgent(config(1, p1, 2, p2));
    try {
      const node = attach({ node: 1, namespace, create: false });
      try {
        result = await withProcessPeer('dvs-udp', peerArgs(v, role, namespace, config(2, p2, 1, p1)), 'json', async (peer) => {
          // The peer reports ready once its agent sees node 1 up and its endpoint is bound.
          await agent.waitForPeers([2], START_TIMEOUT_MS);
          const ep = node.bind(0, CLIENT_EP);
          await waitNode2SeesClient(namespace, peer.signal);
          await waitReachable(ep, peer.signal);
          const value = await fn(ep, peer);
          // Ends a spinning peer's loop (a no-op for the others), so node 2's control socket answers again.
          const quit = await ep.call(SERVER_EP, new Uint8Array(QUIT_BYTES), { timeoutMs: START_TIMEOUT_MS });
          quit.release();
          await sleep(STATS_SETTLE_MS);
          const retransmits = statsRetransmits(agent.stats()) + statsRetransmits(await controlRequest(namespace, 2, 'stats'));
          await stopPeerAgent(peer.handle);
          return { value, retransmits };
        });
      } finally {
        node.detach();
      }
    } finally {
      await agent.stop();
    }
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    // After a failure the peer may have been killed holding node 2's arena: remove it quietly.
    try {
      checkShmGone(namespace);
    } catch (err) {
      if (!failed) throw err;
    }
  }
  return result;
}

// ------------------------------------------------------------------ rtt

function rtt(v: Variant, size: number, iters: number): Promise<RttResult & { retransmits: number }> {
  if (size < 4) return Promise.reject(new Error('dvs-udp RTT needs messages of at least 4 B (sequence number)'));
  return withCluster(v, 'echo', async (ep) => {
    const payload = makePayload(size);
    let seq = 0;
    let lost = 0;
    const check = (reply: Uint8Array): void => {
      checkReply(reply, size);
      const got = (reply[0] | (reply[1] << 8) | (reply[2] << 16) | (reply[3] << 24)) >>> 0;
      if (got !== seq >>> 0) lost++;
    };
    if (v.mode === 'spin') {
      const samples = timeRoundTripsSync(iters, () => {
        payload.writeUInt32LE(++seq >>> 0, 0);
        const r = ep.callSync(SERVER_EP, payload, { spinUs: SPIN_US });
        check(r.payload);
        r.release();
      });
      return { samples, lost };
    }
    const samples = await timeRoundTrips(iters, async () => {
      payload.writeUInt32LE(++seq >>> 0, 0);
      const r = await ep.call(SERVER_EP, payload);
      check(r.payload);
      r.release();
    });
    return { samples, lost };
  }).then(({ value, retransmits }) => ({ ...value, retransmits }));
}

// ------------------------------------------------------------------ throughput

/** What the sink reports (see peers/dvs-udp.ts). */
interface SeqSinkResult extends SinkResult {
  readonly received: number;
  readonly nextSeq: number;
  readonly missing: number;
  readonly disorder: number;
}

/**
 * Pipelined one-way sends, as the local dvs row streams: `trySend` while the
 * node accepts (a remote send holds an acknowledgement credit until node 2
 * has put it in the sink's mailbox; at most 4 × replyCells are in flight),
 * `send` (which waits) when it does not. The payload is copied into shared
 * memory when accepted, so one buffer serves every message. Remote refusals
 * after a successful trySend are counted in `failedSends` and fail the trial.
 */
class StreamSender {
  private seq = 0;
  private readonly buf: Buffer;

  constructor(
    private readonly ep: Endpoint,
    size: number,
  ) {
    this.buf = makePayload(size);
  }

  /** Data messages handed to the endpoint so far (= the next sequence number). */
  get sent(): number {
    return this.seq;
  }

  readonly send = (): true | Promise<unknown> => {
    this.buf.writeUInt32LE(this.seq >>> 0, 0);
    this.seq++;
    return this.ep.trySend(SERVER_EP, this.buf) || this.ep.send(SERVER_EP, this.buf);
  };

  /** After the end marker's acknowledgement every earlier one has arrived (in order per sender). */
  check(): void {
    if (this.ep.failedSends !== 0) throw new Error(`BUG: ${this.ep.failedSends} accepted sends were refused by node 2`);
  }
}

function throughput(v: Variant, size: number, opts: ThroughputOptions): Promise<ThroughputResult & { retransmits: number }> {
  if (size < 4) return Promise.reject(new Error('dvs-udp throughput needs messages of at least 4 B (sequence number)'));
  return withCluster(v, 'sink', async (ep, peer) => {
    const sender = new StreamSender(ep, size);
    const sent = await streamMeasured(opts, peer.signal, sender.send, () => ep.send(SERVER_EP));
    sender.check();
    const result = (await peer.result()) as SeqSinkResult;
    const lost = sender.sent - result.received;
    if (lost !== 0 || result.missing !== 0 || result.disorder !== 0 || result.nextSeq !== sender.sent)
      throw new Error(
        `BUG: sender's sends all settled (${sender.sent}), sink received ${result.received} ` +
          `(gaps ${result.missing}, duplicates/reordered ${result.disorder}, next seq ${result.nextSeq})`,
      );
    return { ...checkSink(result, sent, size), lost };
  }).then(({ value, retransmits }) => ({ ...value, retransmits }));
}

// ------------------------------------------------------------------ rows

function dvsUdpTransport(v: Variant, notes: readonly string[]): Transport {
  return {
    name: v.name,
    notes,
    rtt: (size, iters) => rtt(v, size, iters),
    throughput: (size, opts) => throughput(v, size, opts),
  };
}

export function dvsUdpTransports(): Transport[] {
  return [
    dvsUdpTransport({ name: 'dvs-udp', mode: 'async', agents: 'process' }, [
      'dvs-udp: two `dvs agent` processes (engine threads; UDP 127.0.0.1), harness = client on node 1, peer = server/sink on node 2; async API.',
      '  Throughput: trySend() || send() as the local row (≤ 1024 unacknowledged: the ack credits; an ack = node 2 queued it).',
      '  lost = messages acknowledged/sent that the sink never got (sequence-checked; must be 0); retransmits = agents\' transport counters.',
    ]),
    dvsUdpTransport({ name: 'dvs-udp-embedded', mode: 'async', agents: 'embedded' }, [
      'dvs-udp-embedded: no agent processes: harness and peer each embed their node\'s agent in invoker mode',
      '  (startAgent({ invoker: true }): no engine thread, the event loop and blocking waits run the transport); async API.',
    ]),
    dvsUdpTransport({ name: 'dvs-udp-spin', mode: 'spin', agents: 'embedded' }, [
      'dvs-udp-spin: embedded invoker agents as dvs-udp-embedded; RTT with callSync/receiveSync spinning without limit on both sides',
      '  (the spinning wait runs its node\'s engine); throughput: sink spins in receiveSync, sender as dvs-udp. Before 2026-11-25 this',
      '  row spun with separate agents (--spin-us): 4 threads on 2 cores starved each other and it measured worse than dvs-udp.',
    ]),
    dvsUdpTransport({ name: 'dvs-udp-loss5', mode: 'async', agents: 'process', fault: 'loss=0.05' }, [
      'dvs-udp-loss5: dvs-udp with --fault loss=0.05 on both agents (5 % of all datagrams dropped on send).',
    ]),
    dvsUdpTransport({ name: 'dvs-udp-embedded-loss5', mode: 'async', agents: 'embedded', fault: 'loss=0.05' }, [
      'dvs-udp-embedded-loss5: dvs-udp-embedded with fault loss=0.05 on both embedded agents.',
    ]),
  ];
}
