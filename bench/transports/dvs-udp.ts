/**
 * The dvs cluster rows of the `udp` suite: two `dvs agent` child processes on
 * this machine talking reliable UDP over 127.0.0.1, the harness attached to
 * node 1 as the client (endpoint 0/2) and a peer process (`peers/dvs-udp.ts`)
 * attached to node 2 as the echo server or sink (endpoint 0/1).
 *
 * - `dvs-udp`: async API (call / send promises, the event loop), agents with
 *   their defaults.
 * - `dvs-udp-spin`: RTT with callSync/receiveSync busy-polling for SPIN.client
 *   / SPIN.server µs, agents with `--spin-us SPIN.agent`. Throughput: the sink
 *   spins in receiveSync; the sender streams as `dvs-udp` does (sendSync to a
 *   remote endpoint waits for its acknowledgement, so it cannot pipeline).
 * - `dvs-udp-loss5`: `dvs-udp` with `--fault loss=0.05` on both agents (each
 *   datagram, data and acks alike, is dropped with probability 5 % on send).
 *
 * Every trial (one rtt() or throughput() call) starts its own agents (fresh
 * namespace, free ports), waits until both see their peer up (control
 * 'status') and the server endpoint answers a call (the directory has
 * propagated; EDVSNOTBIND until then), measures, reads the agents' 'stats',
 * then tears everything down: harness detaches, peer killed, agents SIGTERMed
 * (SIGKILLed if they linger) and /dev/shm/dvs.<ns>.* checked to be gone.
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
import { attach, type Endpoint } from '../../lib/index.js';
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
  /** Extra `dvs agent` flags for both agents. */
  readonly agentArgs: readonly string[];
}

/**
 * Spin budgets (µs) of the `-spin` row: agent (`--spin-us`), client
 * (callSync) and server (receiveSync). Picked by measuring on the 2-core dev
 * VM (2026-11-25, quick runs, RTT p50 @ 64 B, agent,client,server):
 * 0,0,0 127-144 · 0,20,20 165-197 · 0,50,50 200-356 · 20,50,50 189-354 ·
 * 50,200,200 866 · 200,200,200 519 · 0,∞,∞ 223 · 50,∞,∞ 271 · 1000,∞,∞ 5352.
 * Four threads (client, server, two engines) share 2 cores, so every spinner
 * steals the core of the thread it waits for; the engines must not spin at
 * all. 0,20,20 keeps a small spin in the sync calls (what the row is about)
 * at a small cost. Overridable: DVS_BENCH_UDP_SPIN=agent,client,server.
 */
const SPIN = spinBudgets(process.env.DVS_BENCH_UDP_SPIN ?? '0,20,20');

function spinBudgets(text: string): { agent: number; client: number; server: number } {
  const [agent, client, server] = text.split(',').map(Number);
  if (![agent, client, server].every((n) => Number.isFinite(n) && n >= 0))
    throw new Error(`DVS_BENCH_UDP_SPIN must be agent,client,server µs, got '${text}'`);
  return { agent, client, server };
}

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
function errorLine(stderr: string): string {
  const lines = stderr.split('\n').map((line) => line.trim()).filter((line) => line !== '');
  return lines.find((line) => /^[A-Za-z]*Error\b/.test(line)) ?? [...lines].reverse().find((line) => /"level":"error"/.test(line)) ?? lines.at(-1) ?? '';
}

/** Two UDP ports on 127.0.0.1 that were free a moment ago (held together, so distinct). */
async function freeUdpPorts(n: number): Promise<number[]> {
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

async function startCluster(agentArgs: readonly string[]): Promise<Cluster> {
  const namespace = `bench-udp-${process.pid}-${trials++}`;
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
    await Promise.all(
      procs.map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        await exited;
        clearTimeout(timer);
      }),
    );
    const prefix = `dvs.${namespace}.`;
    const left = readdirSync('/dev/shm').filter((f) => f.startsWith(prefix));
    for (const f of left) unlinkSync(`/dev/shm/${f}`);
    if (left.length > 0) throw new Error(`teardown left /dev/shm/${left.join(', /dev/shm/')} (removed)`);
  };

  const retransmits = async (): Promise<number> => {
    await sleep(STATS_SETTLE_MS);
    let total = 0;
    for (const node of [1, 2]) {
      const stats = (await controlRequest(namespace, node, 'stats')) as { peers?: PeerStatsJson[] };
      for (const p of stats.peers ?? []) total += p.retransmits ?? 0;
    }
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

/**
 * One trial: agents, the harness attached to node 1 (endpoint CLIENT_EP),
 * the peer attached to node 2 (SERVER_EP); `fn` runs once the server answers.
 * Returns `fn`'s result and the agents' retransmit count.
 */
async function withCluster<T>(
  v: Variant,
  role: Role,
  fn: (ep: Endpoint, peer: Peer<ChildProcess>) => Promise<T>,
): Promise<{ value: T; retransmits: number }> {
  const cluster = await startCluster(v.agentArgs);
  let result: { value: T; retransmits: number } | undefined;
  try {
    const node = attach({ node: 1, namespace: cluster.namespace, create: false });
    try {
      result = await withProcessPeer(
        'dvs-udp',
        [role, v.mode, cluster.namespace, String(SERVER_EP), String(SPIN.server)],
        'json',
        async (peer) => {
          const ep = node.bind(0, CLIENT_EP);
          const run = async (): Promise<{ value: T; retransmits: number }> => {
            await waitReachable(ep, peer.signal);
            const value = await fn(ep, peer);
            return { value, retransmits: await cluster.retransmits() };
          };
          return Promise.race([run(), cluster.died]);
        },
      );
    } finally {
      node.detach();
    }
  } finally {
    await cluster.stop();
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
        const r = ep.callSync(SERVER_EP, payload, { spinUs: SPIN.client });
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
  const spinArgs = ['--spin-us', String(SPIN.agent)];
  return [
    dvsUdpTransport({ name: 'dvs-udp', mode: 'async', agentArgs: [] }, [
      'dvs-udp: two `dvs agent` processes (UDP 127.0.0.1), harness = client on node 1, peer = server/sink on node 2; async API.',
      '  Throughput: trySend() || send() as the local row (≤ 1024 unacknowledged: the ack credits; an ack = node 2 queued it).',
      '  lost = messages acknowledged/sent that the sink never got (sequence-checked; must be 0); retransmits = agents\' transport counters.',
    ]),
    dvsUdpTransport({ name: 'dvs-udp-spin', mode: 'spin', agentArgs: spinArgs }, [
      `dvs-udp-spin: agents --spin-us ${SPIN.agent}; RTT with callSync/receiveSync spinning ${SPIN.client}/${SPIN.server} µs;`,
      '  throughput: sink spins in receiveSync, sender as dvs-udp (sendSync to a remote endpoint waits for each ack).',
    ]),
    dvsUdpTransport({ name: 'dvs-udp-loss5', mode: 'async', agentArgs: ['--fault', 'loss=0.05'] }, [
      'dvs-udp-loss5: dvs-udp with --fault loss=0.05 on both agents (5 % of all datagrams dropped on send).',
    ]),
  ];
}
