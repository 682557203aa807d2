/**
 * The `membership` suite: clusters of 3, 5 and 10 `dvs agent` processes on
 * 127.0.0.1, with each registry backend:
 * - embedded: every agent knows only the seed, node 1 (`--seeds 1=127.0.0.1:PORT`);
 * - etcd: every agent runs with `--registry etcd://127.0.0.1:PORT`, one real
 *   etcd server for the whole suite (bench/etcd.ts: free ports, temp data
 *   directory, always killed and removed). Without the etcd binary these rows
 *   carry an `error` naming the cause and no numbers.
 * Each trial starts a fresh cluster (own namespace, free ports), waits until
 * every agent's 'nodes' view shows every member alive, then measures:
 *
 * - converge_ms: the harness attaches to one node's arena (rotating over the
 *   nodes), binds a fresh endpoint there and polls every other agent's 'ps'
 *   until each lists it as remote; the sample is the time from just before
 *   bind() to the answer that completed the set (the directory's announcement
 *   over CONTROL frames, or its key in etcd and the agents' watches, applied
 *   by every other agent).
 * - lookup_us / locate_us: the harness binds LOOKUP_NAMES named endpoints on
 *   one node, opens a Cluster handle (`connectCluster`, the public API) on
 *   another node, waits until the handle sees them all (waitForBind), then
 *   calls `cluster.lookup(dc, name)` (and `cluster.locate(dc, ep)`) over the
 *   names in turn, LOOKUPS_PER_BATCH calls between two clock reads; a sample is
 *   one batch's time divided by its calls (the loop and the clock read
 *   included). Every call must find its entry (checked).
 * - failure_detect_ms: kill -9 of one non-seed agent (rotating); every
 *   survivor's 'nodes' is polled until its view shows the victim 'dead'; the
 *   sample is the time from the kill to the last survivor's first 'dead'
 *   answer (the slowest survivor). The time to the last survivor's 'suspect'
 *   is recorded as well (embedded only: the etcd backend has no suspect state).
 *
 * Times are performance.now() in the harness, taken when an answer arrives:
 * each converge/detect sample is an upper bound with a resolution of about
 * the poll interval (POLL_MS after a kill, CONVERGE_POLL_MS after a bind) plus
 * one control round trip. Every survivor is polled over its own persistent
 * control connection.
 *
 * Teardown after each trial: connections closed, harness detached, agents
 * SIGTERMed (SIGKILLed after 3 s), the killed agent's arena
 * (nobody is left to remove it after a kill -9) unlinked, and anything else
 * left in /dev/shm/dvs.<ns>.* fails the trial.
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import { existsSync, unlinkSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { attach, connectCluster, type Cluster as ClusterHandle, type NodesResult, type PsRow } from '../../lib/index.js';
import { controlPath } from '../../lib/agent/control.js';
import { BenchEtcd, etcdVersion } from '../etcd.js';
import { percentile } from '../stats.js';
import { UsageError, type Suite, type SuiteOptions, type SuiteRun } from '../suite.js';
import { renderTable } from '../table.js';
import { checkShmGone, errorLine, freeUdpPorts, terminate } from '../transports/dvs-udp.js';

const MAIN_JS = fileURLToPath(new URL('../../lib/cli/main.js', import.meta.url));
const SIZES: readonly number[] = [3, 5, 10];
const MAX_NODES = 32;
type Backend = 'embedded' | 'etcd';
const BACKENDS: readonly Backend[] = ['embedded', 'etcd'];
/** Detection settings passed to every agent (the agent's defaults in membership mode; with etcd they only time the transport's links). */
const DEAD_AFTER_MS = 1000;
const SUSPECT_MS = 500;
/** Poll interval of the survivors' 'nodes' after a kill (a 1.5 s wait). */
const POLL_MS = 10;
/** Poll interval of the other agents' 'ps' after a bind (a wait of a few ms: finer, and brief). */
const CONVERGE_POLL_MS = 2;
const FORM_TIMEOUT_MS = 30_000;
const DETECT_TIMEOUT_MS = 15_000;
const CONVERGE_TIMEOUT_MS = 10_000;
/** The etcd backend's default lease TTL (node liveness; the agents get --registry etcd://host:port without ?ttl=). */
const ETCD_LEASE_TTL_S = 2;
/** Named endpoints bound for the lookup measurement (looked up in turn). */
const LOOKUP_NAMES = 32;
/** lookup()/locate() calls between two clock reads. */
const LOOKUPS_PER_BATCH = 200;
/** Batches per trial and per call measured (after LOOKUP_WARMUP_BATCHES unmeasured ones). */
const LOOKUP_BATCHES = 2000;
const LOOKUP_WARMUP_BATCHES = 500;
const LOOKUP_EP_BASE = 1000;
const STDERR_TAIL = 2000;
const DC = 1;
/** Targets of issue 4 (printed against, not asserted). */
const TARGET_DETECT_MS = 2000;
const TARGET_DETECT_NODES = 10;
const TARGET_CONVERGE_MS: Readonly<Record<Backend, number>> = { embedded: 50, etcd: 100 };
const TARGET_LOOKUP_US = 1;

interface Plan {
  /** Clusters per size (one kill each). */
  readonly trials: number;
  /** Bindings measured per trial. */
  readonly bindings: number;
}
const QUICK: Plan = { trials: 3, bindings: 2 };
const FULL: Plan = { trials: 10, bindings: 3 };

export interface MembershipRow {
  readonly backend: Backend;
  readonly nodes: number;
  failure_detect_ms_p50: number | null;
  failure_detect_ms_p99: number | null;
  failure_detect_ms_max: number | null;
  /** Kill to the last survivor's 'suspect' (p50). */
  failure_suspect_ms_p50: number | null;
  converge_ms_p50: number | null;
  converge_ms_p99: number | null;
  /** cluster.lookup(dc, name) on a connectCluster handle, per call (batches of LOOKUPS_PER_BATCH). */
  lookup_us_p50: number | null;
  lookup_us_p99: number | null;
  /** cluster.locate(dc, ep), the same way. */
  locate_us_p50: number | null;
  locate_us_p99: number | null;
  /** Trials (clusters) that completed. */
  trials: number;
  dead_after_ms: number;
  suspect_ms: number;
  /** etcd rows: the lease TTL that decides when a killed node is dead. */
  lease_ttl_s?: number;
  samples: {
    failure_detect_ms: number[];
    failure_suspect_ms: number[];
    converge_ms: number[];
    /** Per trial: the p50 of its lookup batches (µs per call). */
    lookup_us_trial_p50: number[];
    locate_us_trial_p50: number[];
  };
  /** Why the row was not measured at all (e.g. etcd missing); its metrics are null. */
  error?: string;
  /** Trials that failed (the others count). */
  errors?: string[];
}

// ---------------------------------------------------------- control client

/** One persistent connection to an agent's control socket; requests may overlap (matched by id). */
class ControlConn {
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private buf = '';
  private closedWith: Error | null = null;

  private constructor(private readonly sock: Socket, readonly node: number) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      this.buf += chunk;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        const res = JSON.parse(line) as { id: number; ok: boolean; result?: unknown; error?: { message: string } };
        const w = this.waiting.get(res.id);
        this.waiting.delete(res.id);
        if (res.ok) w?.resolve(res.result);
        else w?.reject(new Error(`node ${node}: ${res.error?.message ?? 'request failed'}`));
      }
    });
    const fail = (e: Error): void => {
      this.closedWith ??= e;
      for (const w of this.waiting.values()) w.reject(this.closedWith);
      this.waiting.clear();
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error(`node ${node}: control connection closed`)));
  }

  static open(namespace: string, node: number): Promise<ControlConn> {
    return new Promise((resolve, reject) => {
      const sock = connect({ path: controlPath(namespace, node) });
      sock.once('error', reject);
      sock.once('connect', () => {
        sock.off('error', reject);
        resolve(new ControlConn(sock, node));
      });
    });
  }

  request<R>(op: string): Promise<R> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = this.nextId++;
    return new Promise<R>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(JSON.stringify({ id, op }) + '\n');
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

// ------------------------------------------------------------------ cluster

let clusters = 0;

interface AgentChild {
  readonly node: number;
  readonly child: ChildProcess;
  stderr: string;
}

class Cluster {
  readonly namespace = `bench-mem-${process.pid}-${clusters++}`;
  readonly agents: AgentChild[] = [];
  conns: ControlConn[] = [];
  /** Set when the harness kills an agent on purpose. */
  killed: number | null = null;
  private stopping = false;
  private diedReject!: (e: Error) => void;
  /** Rejects when an agent exits that was not killed on purpose. */
  readonly died = new Promise<never>((_, reject) => (this.diedReject = reject));

  /** `etcd`: the server of an etcd cluster (null: embedded membership from seed node 1). */
  constructor(
    readonly size: number,
    private readonly etcd: BenchEtcd | null,
  ) {
    this.died.catch(() => {});
  }

  async start(): Promise<void> {
    const ports = await freeUdpPorts(this.size);
    const registry = this.etcd ? ['--registry', this.etcd.url] : ['--seeds', `1=127.0.0.1:${ports[0]}`];
    for (let i = 0; i < this.size; i++) {
      const node = i + 1;
      const child = spawn(
        process.execPath,
        [MAIN_JS, 'agent', '--node', String(node), '--listen', `127.0.0.1:${ports[i]}`, ...registry, '--namespace', this.namespace,
          '--dead-after-ms', String(DEAD_AFTER_MS), '--suspect-ms', String(SUSPECT_MS), '--log-level', 'warn'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      const a: AgentChild = { node, child, stderr: '' };
      child.stderr?.setEncoding('utf8').on('data', (text: string) => {
        a.stderr = (a.stderr + text).slice(-STDERR_TAIL);
      });
      child.on('error', (err) => this.diedReject(new Error(`agent ${node} failed: ${err.message}`)));
      child.on('close', (code, signal) => {
        if (!this.stopping && this.killed !== node) this.diedReject(new Error(`agent ${node} exited (${signal ?? `code ${code}`}): ${errorLine(a.stderr)}`));
      });
      this.agents.push(a);
    }
    await Promise.race([this.formed(), this.died]);
  }

  /** Connects to every agent's control socket (retrying while it starts) and waits until every view shows all members alive. */
  private async formed(): Promise<void> {
    const deadline = performance.now() + FORM_TIMEOUT_MS;
    for (const a of this.agents) {
      for (;;) {
        try {
          this.conns.push(await ControlConn.open(this.namespace, a.node));
          break;
        } catch (err) {
          if (performance.now() > deadline) throw new Error(`agent ${a.node}: no control socket within ${FORM_TIMEOUT_MS} ms (${(err as Error).message})`);
          await sleep(20);
        }
      }
    }
    let last = '';
    for (;;) {
      const views = await Promise.all(this.conns.map((c) => c.request<NodesResult>('nodes')));
      const bad = views.find((v) => v.members.length !== this.size || v.members.some((m) => m.state !== 'alive'));
      if (bad === undefined) return;
      last = `node ${bad.node}: ${bad.members.map((m) => `${m.node}:${m.state}`).join(' ')}`;
      if (performance.now() > deadline) throw new Error(`cluster of ${this.size} not formed within ${FORM_TIMEOUT_MS} ms (${last})`);
      await sleep(20);
    }
  }

  conn(node: number): ControlConn {
    return this.conns[node - 1];
  }

  kill(node: number): void {
    this.killed = node;
    this.agents[node - 1].child.kill('SIGKILL');
  }

  async stop(): Promise<void> {
    this.stopping = true;
    for (const c of this.conns) c.close();
    this.conns = [];
    await Promise.all(this.agents.map((a) => terminate(a.child)));
    // A kill -9ed agent leaves its arena behind (nobody is left to remove it): expected, removed here.
    if (this.killed !== null) {
      const arena = `/dev/shm/dvs.${this.namespace}.${this.killed}`;
      if (existsSync(arena)) unlinkSync(arena);
    }
    checkShmGone(this.namespace);
  }
}

// ------------------------------------------------------------ measurements

/** Binds a fresh endpoint on `node` (harness attached to its arena); ms until every other agent lists it as remote. */
async function converge(cluster: Cluster, node: number, ep: number): Promise<number> {
  const others = cluster.conns.filter((c) => c.node !== node);
  const n = attach({ node, namespace: cluster.namespace });
  try {
    const t0 = performance.now();
    n.bind(DC, ep);
    const times = await Promise.all(
      others.map(async (c) => {
        for (;;) {
          const r = await c.request<{ endpoints: PsRow[] }>('ps');
          const t = performance.now() - t0;
          if (r.endpoints.some((e) => e.dc === DC && e.ep === ep && e.where === 'remote' && e.node === node)) return t;
          if (t > CONVERGE_TIMEOUT_MS) throw new Error(`node ${c.node}: endpoint ${DC}:${ep} of node ${node} not listed within ${CONVERGE_TIMEOUT_MS} ms`);
          await sleep(CONVERGE_POLL_MS);
        }
      }),
    );
    return Math.max(...times);
  } finally {
    n.detach();
  }
}

/** Per-call times (µs) of `call` over `LOOKUP_BATCHES` batches; `call` returns whether it found its entry (every call must). */
function timeCalls(what: string, call: (i: number) => boolean): Float64Array {
  const us = new Float64Array(LOOKUP_BATCHES);
  let found = 0;
  let i = 0;
  for (let b = -LOOKUP_WARMUP_BATCHES; b < LOOKUP_BATCHES; b++) {
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < LOOKUPS_PER_BATCH; k++) if (call(i++)) found++;
    const t1 = process.hrtime.bigint();
    if (b >= 0) us[b] = Number(t1 - t0) / 1000 / LOOKUPS_PER_BATCH;
  }
  if (found !== i) throw new Error(`${what}: ${i - found} of ${i} calls found no entry`);
  return us;
}

/**
 * Binds LOOKUP_NAMES named endpoints on node `binder` (harness attached to its
 * arena), opens a Cluster handle on node `observer`, waits until it sees them
 * all, then times lookup(dc, name) and locate(dc, ep) on it.
 */
async function lookups(cluster: Cluster, binder: number, observer: number): Promise<{ lookup: Float64Array; locate: Float64Array }> {
  const n = attach({ node: binder, namespace: cluster.namespace });
  let handle: ClusterHandle | null = null;
  try {
    const names: string[] = [];
    const eps: number[] = [];
    for (let k = 0; k < LOOKUP_NAMES; k++) {
      names.push(`bench-service-${k}`);
      eps.push(LOOKUP_EP_BASE + k);
      n.bind(DC, LOOKUP_EP_BASE + k, { name: names[k] });
    }
    handle = await connectCluster({ node: observer, namespace: cluster.namespace });
    const h = handle;
    for (const name of names) {
      const e = await h.waitForBind(DC, name, { timeoutMs: CONVERGE_TIMEOUT_MS });
      if (e.node !== binder) throw new Error(`node ${observer}: ${name} bound on node ${binder} is looked up on node ${e.node}`);
    }
    const mask = LOOKUP_NAMES - 1; // a power of two
    return {
      lookup: timeCalls('lookup', (i) => h.lookup(DC, names[i & mask]) !== null),
      locate: timeCalls('locate', (i) => h.locate(DC, eps[i & mask]) !== null),
    };
  } finally {
    handle?.close();
    n.detach();
  }
}

/** Kills `victim` with SIGKILL; ms until the last survivor shows it 'dead' (and 'suspect', null unless every survivor showed it). */
async function detect(cluster: Cluster, victim: number): Promise<{ suspect: number | null; dead: number }> {
  const survivors = cluster.conns.filter((c) => c.node !== victim);
  const t0 = performance.now();
  cluster.kill(victim);
  const times = await Promise.all(
    survivors.map(async (c) => {
      let suspect: number | null = null;
      for (;;) {
        const r = await c.request<NodesResult>('nodes');
        const t = performance.now() - t0;
        const state = r.members.find((m) => m.node === victim)?.state;
        if (state === 'suspect' && suspect === null) suspect = t;
        if (state === 'dead') return { suspect, dead: t };
        if (state !== 'alive' && state !== 'suspect') throw new Error(`node ${c.node} shows node ${victim} '${state}'`);
        if (t > DETECT_TIMEOUT_MS) throw new Error(`node ${c.node}: node ${victim} not dead within ${DETECT_TIMEOUT_MS} ms (state ${state})`);
        await sleep(POLL_MS);
      }
    }),
  );
  const suspects = times.map((x) => x.suspect);
  return { suspect: suspects.some((x) => x === null) ? null : Math.max(...(suspects as number[])), dead: Math.max(...times.map((x) => x.dead)) };
}

/** Lookup batch samples of one row (all trials), summarized at the end. */
interface LookupPool {
  lookup: Float64Array[];
  locate: Float64Array[];
}

/** One trial: a fresh cluster, `plan.bindings` converge samples, the lookup timing, one kill. */
async function trial(size: number, index: number, plan: Plan, row: MembershipRow, pool: LookupPool, etcd: BenchEtcd | null): Promise<void> {
  const gone = etcd?.gone;
  if (gone) throw new Error(gone);
  const cluster = new Cluster(size, etcd);
  try {
    await cluster.start();
    const converged: number[] = [];
    for (let b = 0; b < plan.bindings; b++) {
      const node = ((index * plan.bindings + b) % size) + 1;
      converged.push(await Promise.race([converge(cluster, node, 100 + b), cluster.died]));
    }
    const binder = (index % size) + 1;
    const l = await Promise.race([lookups(cluster, binder, (binder % size) + 1), cluster.died]);
    const victim = 2 + (index % (size - 1));
    const d = await Promise.race([detect(cluster, victim), cluster.died]);
    row.samples.converge_ms.push(...converged);
    row.samples.failure_detect_ms.push(d.dead);
    if (d.suspect !== null) row.samples.failure_suspect_ms.push(d.suspect);
    pool.lookup.push(l.lookup);
    pool.locate.push(l.locate);
    row.samples.lookup_us_trial_p50.push(pooled([l.lookup], 50)!);
    row.samples.locate_us_trial_p50.push(pooled([l.locate], 50)!);
    row.trials++;
  } finally {
    await cluster.stop();
  }
}

const round = (x: number): number => Math.round(x * 10) / 10;
const round3 = (x: number): number => Math.round(x * 1000) / 1000;
const p = (xs: number[], q: number): number | null => (xs.length === 0 ? null : round(percentile(xs, q)));
/** Percentile of pooled batch samples (µs, 3 decimals). */
function pooled(parts: readonly Float64Array[], q: number): number | null {
  const n = parts.reduce((a, x) => a + x.length, 0);
  if (n === 0) return null;
  const all = new Float64Array(n);
  let at = 0;
  for (const x of parts) {
    all.set(x, at);
    at += x.length;
  }
  return round3(percentile(all as unknown as number[], q));
}

function emptyRow(backend: Backend, size: number): MembershipRow {
  return {
    backend,
    nodes: size,
    failure_detect_ms_p50: null,
    failure_detect_ms_p99: null,
    failure_detect_ms_max: null,
    failure_suspect_ms_p50: null,
    converge_ms_p50: null,
    converge_ms_p99: null,
    lookup_us_p50: null,
    lookup_us_p99: null,
    locate_us_p50: null,
    locate_us_p99: null,
    trials: 0,
    dead_after_ms: DEAD_AFTER_MS,
    suspect_ms: SUSPECT_MS,
    ...(backend === 'etcd' ? { lease_ttl_s: ETCD_LEASE_TTL_S } : {}),
    samples: { failure_detect_ms: [], failure_suspect_ms: [], converge_ms: [], lookup_us_trial_p50: [], locate_us_trial_p50: [] },
  };
}

/** `etcd`: the suite's etcd server for an etcd row, null for an embedded row. */
async function measureSize(backend: Backend, size: number, plan: Plan, etcd: BenchEtcd | null, log: (line: string) => void): Promise<MembershipRow> {
  const row = emptyRow(backend, size);
  const pool: LookupPool = { lookup: [], locate: [] };
  for (let i = 0; i < plan.trials; i++) {
    try {
      await trial(size, i, plan, row, pool, etcd);
      log(`${backend} ${size} agents, trial ${i + 1}/${plan.trials}: detect ${round(row.samples.failure_detect_ms.at(-1)!)} ms, ` +
        `converge ${row.samples.converge_ms.slice(-plan.bindings).map(round).join(', ')} ms, ` +
        `lookup ${row.samples.lookup_us_trial_p50.at(-1)} µs, locate ${row.samples.locate_us_trial_p50.at(-1)} µs`);
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      (row.errors ??= []).push(msg);
      log(`${backend} ${size} agents, trial ${i + 1}/${plan.trials} failed: ${msg}`);
    }
  }
  const s = row.samples;
  s.failure_detect_ms = s.failure_detect_ms.map(round);
  s.failure_suspect_ms = s.failure_suspect_ms.map(round);
  s.converge_ms = s.converge_ms.map(round);
  row.failure_detect_ms_p50 = p(s.failure_detect_ms, 50);
  row.failure_detect_ms_p99 = p(s.failure_detect_ms, 99);
  row.failure_detect_ms_max = p(s.failure_detect_ms, 100);
  row.failure_suspect_ms_p50 = p(s.failure_suspect_ms, 50);
  row.converge_ms_p50 = p(s.converge_ms, 50);
  row.converge_ms_p99 = p(s.converge_ms, 99);
  row.lookup_us_p50 = pooled(pool.lookup, 50);
  row.lookup_us_p99 = pooled(pool.lookup, 99);
  row.locate_us_p50 = pooled(pool.locate, 50);
  row.locate_us_p99 = pooled(pool.locate, 99);
  return row;
}

// ------------------------------------------------------------------- suite

const NOTES: readonly string[] = [
  `failure_detect_ms: kill -9 of one non-seed agent to the moment the last survivor's 'nodes' view shows it 'dead'. embedded: agents run with --dead-after-ms ${DEAD_AFTER_MS} --suspect-ms ${SUSPECT_MS}, the membership defaults, so about ${DEAD_AFTER_MS + SUSPECT_MS} ms is expected by design; failure_suspect_ms_p50: the same to 'suspect'. etcd: a node is dead when etcd expires its lease (TTL ${ETCD_LEASE_TTL_S} s, the default; etcd checks expiry periodically) and the survivors' watches see its key deleted; there is no 'suspect' state (null).`,
  `converge_ms: bind() of a fresh endpoint by the harness attached to one node's arena to the moment every other agent's 'ps' lists it as remote (polled every ${CONVERGE_POLL_MS} ms). It includes the bound node's engine noticing the bind (a bind rings the agent's doorbell), then embedded: the announcement over CONTROL frames; etcd: the endpoint's key written to etcd and delivered by each agent's watch; and each peer applying it.`,
  `lookup_us / locate_us: cluster.lookup(dc, name) / cluster.locate(dc, ep) on a connectCluster() handle of another node than the one holding ${LOOKUP_NAMES} named endpoints, after waitForBind saw them all; the names/endpoints are cycled; the clock is read every ${LOOKUPS_PER_BATCH} calls and a sample is the batch's time per call (loop and clock read included: an upper bound); ${LOOKUP_BATCHES} batches per trial after ${LOOKUP_WARMUP_BATCHES} warm-up batches, percentiles over all batches of the row (a p99 of batch means, so a single slow call is averaged over its batch). Every call must find its entry. The cache is the same Map whatever the backend and cluster size: rows differ only by noise.`,
  `Each trial is a fresh cluster of agent processes on 127.0.0.1 (own namespace, free ports); embedded: all join via seed node 1; etcd: one etcd server (a single member on 127.0.0.1, started by the suite, data in a temp directory) serves every trial, each in its own namespace. One kill per trial; after a kill the survivors are polled every ${POLL_MS} ms over persistent control connections; samples are upper bounds with about the poll interval as resolution. Percentiles are nearest-rank: with 10 samples p99 is the maximum.`,
];

function sizesOf(opts: SuiteOptions): readonly number[] {
  const sizes = opts.sizes ?? SIZES;
  for (const n of sizes) if (n < 2 || n > MAX_NODES) throw new UsageError(`membership: --sizes are cluster sizes (agents), 2..${MAX_NODES}: ${n}`);
  return sizes;
}

const cell = (x: number | null, unit = ''): string => (x === null ? '–' : `${x}${unit}`);

function render(rows: readonly MembershipRow[], plan: Plan): string {
  const table = renderTable(
    `Membership (${plan.trials} trials per row, ${plan.bindings} bindings per trial)`,
    ['backend', 'nodes', 'trials', 'detect p50 ms', 'detect p99 ms', 'detect max ms', 'suspect p50 ms', 'converge p50 ms', 'converge p99 ms',
      'lookup p50 µs', 'lookup p99 µs', 'locate p50 µs', 'locate p99 µs'],
    rows.map((r) => [r.backend, String(r.nodes), String(r.trials), cell(r.failure_detect_ms_p50), cell(r.failure_detect_ms_p99), cell(r.failure_detect_ms_max),
      cell(r.failure_suspect_ms_p50), cell(r.converge_ms_p50), cell(r.converge_ms_p99),
      cell(r.lookup_us_p50), cell(r.lookup_us_p99), cell(r.locate_us_p50), cell(r.locate_us_p99)]),
  );
  const verdict = (v: number | null, target: number): string => (v === null ? 'not measured' : v <= target ? 'met' : 'missed');
  const worst = (xs: (number | null)[]): number | null => {
    const ok = xs.filter((x): x is number => x !== null);
    return ok.length === 0 ? null : Math.max(...ok);
  };
  const of = (b: Backend): MembershipRow[] => rows.filter((r) => r.backend === b);
  const big = of('embedded').find((r) => r.nodes === TARGET_DETECT_NODES);
  const convTarget = (b: Backend): string => {
    if (of(b).length === 0) return `  binding visible cluster-wide <= ${TARGET_CONVERGE_MS[b]} ms p50 (${b}): no ${b} rows in this run`;
    const w = worst(of(b).map((r) => r.converge_ms_p50));
    return `  binding visible cluster-wide <= ${TARGET_CONVERGE_MS[b]} ms p50 (${b}): worst size ${cell(w, ' ms')} (${verdict(w, TARGET_CONVERGE_MS[b])})`;
  };
  const lookupWorst = worst(rows.map((r) => r.lookup_us_p50));
  const targets = [
    'Targets (issue 4; printed, not asserted):',
    `  embedded failure detection <= ${TARGET_DETECT_MS} ms p50 with ${TARGET_DETECT_NODES} agents: ${big ? `${cell(big.failure_detect_ms_p50, ' ms')} (${verdict(big.failure_detect_ms_p50, TARGET_DETECT_MS)})` : 'no 10-agent embedded row in this run'}`,
    convTarget('embedded'),
    convTarget('etcd'),
    `  cached lookup <= ${TARGET_LOOKUP_US} µs p50: worst row ${cell(lookupWorst, ' µs')} (${verdict(lookupWorst, TARGET_LOOKUP_US)})`,
  ];
  const skipped = rows.filter((r) => r.error !== undefined).map((r) => `  ${r.backend} ${r.nodes} agents: ${r.error}`);
  const errors = rows.flatMap((r) => (r.errors ?? []).map((e) => `  ${r.backend} ${r.nodes} agents: ${e}`));
  return [
    table,
    targets.join('\n') + '\n',
    skipped.length > 0 ? ['Not measured:', ...skipped].join('\n') + '\n' : '',
    ['Notes:', ...NOTES.map((n) => `  ${n}`)].join('\n') + '\n',
    errors.length > 0 ? ['Failed trials:', ...errors].join('\n') + '\n' : '',
  ].filter((x) => x !== '').join('\n');
}

function backendsOf(opts: SuiteOptions): readonly Backend[] {
  if (opts.only === undefined) return BACKENDS;
  for (const b of opts.only) {
    if (!(BACKENDS as readonly string[]).includes(b)) throw new UsageError(`membership: unknown backend "${b}" (available: ${BACKENDS.join(', ')})`);
  }
  return BACKENDS.filter((b) => opts.only!.includes(b));
}

export async function runMembership(opts: SuiteOptions, log: (line: string) => void): Promise<SuiteRun> {
  const backends = backendsOf(opts);
  const sizes = sizesOf(opts);
  const plan = opts.quick ? QUICK : FULL;
  const results: MembershipRow[] = [];
  for (const backend of backends) {
    let etcd: BenchEtcd | null = null;
    let unavailable: string | null = null;
    if (backend === 'etcd') {
      try {
        etcd = await BenchEtcd.start();
        log(`etcd running at ${etcd.url} (data in ${etcd.dir})`);
      } catch (err) {
        unavailable = `not measured: ${err instanceof Error ? err.message : String(err)}`;
        log(`etcd rows ${unavailable}`);
      }
    }
    try {
      for (const size of sizes) {
        if (unavailable !== null) {
          results.push({ ...emptyRow(backend, size), error: unavailable });
          continue;
        }
        const row = await measureSize(backend, size, plan, etcd, log);
        log(`${backend} ${size} agents: detect p50 ${cell(row.failure_detect_ms_p50)} ms, converge p50 ${cell(row.converge_ms_p50)} ms, lookup p50 ${cell(row.lookup_us_p50)} µs (${row.trials} trials)`);
        results.push(row);
      }
    } finally {
      await etcd?.stop();
    }
  }
  const etcdVer = backends.includes('etcd') ? await etcdVersion() : undefined;
  return { json: { results, plan, ...(etcdVer ? { etcd: etcdVer } : {}), notes: NOTES }, text: render(results, plan) };
}

export const membershipSuite: Suite = {
  name: 'membership',
  run: runMembership,
};
