/**
 * The `migration` suite (issue 5, "Benchmark"): transparent service migration
 * under client load, per backend and state size.
 *
 * OWNER: the migration-bench helper (the session that built this suite for
 * issue 5's benchmark). Another helper must not start a second implementation
 * of this suite: extend this file.
 *
 * Each row (backend × state size) starts a fresh cluster on 127.0.0.1: three
 * `dvs agent` processes (own namespace, free ports, DC 1 on nodes 1-3), the
 * bench service (bench/migration-service.ts: a key-value store of the row's
 * state size, binary snapshot()/restore()) under `dvs serve` on node 1, and
 * one client process per node (bench/migration-client.ts: CLIENTS_PER_NODE
 * clients each, every client in a closed loop of PIPELINE one-way puts and
 * one call, each message with the client's next sequence number). After
 * WARMUP of steady load the harness migrates the service round-robin
 * 1 → 2 → 3 → 1 … through the source node's `connectCluster` handle
 * (`cluster.migrate({dc, ep, to, method})`), `plan.migrations` times with
 * GAP ms of steady load between two, then stops the clients and reads the
 * service's per-client sequence records, its per-hop measurements and a
 * checksum of its state.
 *
 * Metrics (all times in ms):
 * - downtime: first handle() at the destination − last handle() at the source,
 *   both taken by the service itself on the host's monotonic clock (the
 *   orchestrator's own figure, freeze → destination serving as the source's
 *   agent sees it, is reported next to it as orchestrator_downtime).
 *   The source stops handling when it is told to quiesce (the freeze) and
 *   the first message handled at the destination is the first call served
 *   there (the image's messages first, then held senders), so this is the
 *   issue's "freeze to the first call served at the destination", measured
 *   from the last message the source handled (under load at most one
 *   client round trip before the freeze).
 * - phases of the downtime, from the same clock points: drain (last handle at
 *   the source → snapshot() called), snapshot (= checkpoint), transfer
 *   (snapshot() returned → restore() called: image encoded and written by the
 *   runtime, read by the source agent, sent as CONTROL chunks, written by the
 *   destination agent, read and decoded by the standby process), restore,
 *   resume (restore() returned → first handle(): mig-restored, adopt,
 *   mig-adopt, node.adopt).
 * - total: the orchestrator's START → last COMMIT (record.totalMs), and its
 *   per-step times (record.steps).
 * - client latency: every call's start and end on the monotonic clock. A call
 *   overlapping a migration window (harness: migrate() called + the record's
 *   PREPARE time, i.e. about START, → migrate() returned) counts as "during";
 *   one outside every window extended by SETTLE_MS, after WARMUP_SKIP_MS of
 *   load, as "steady".
 * - lost / duplicated / reordered, per client from its sequence numbers (the
 *   service's record): duplicated = a seq seen again, reordered = a seq that
 *   arrived after a later one, lost = seqs the client used − distinct seqs
 *   the service saw. Failed calls/sends and bad replies are counted apart.
 *
 * ptrace and criu rows: each row first asks `cluster.migrate` with its method
 * to the service's own node (refused either way, nothing moves):
 * EDVSNOSYS → the row carries `error` and no numbers.
 *
 * Profiling aids (environment): DVS_BENCH_MIG_CLIENTS=N clients per node
 * instead of 3 (0: no load, an idle cluster: no latency or sequence figures);
 * DVS_BENCH_MIG_TRACE=DIR runs the agents with --log-level debug and keeps
 * their stderr in DIR/<row>-agent-<node>.log (the orchestrator's per-step
 * debug lines, when it writes them).
 *
 * Cleanup after every row: clients stopped, the service SIGTERMed, agents
 * SIGTERMed (SIGKILL after 3 s), any `dvs serve` process of the row's
 * namespace still there killed, image files, service logs and the samples
 * directory removed; anything left in /dev/shm/dvs.<ns>.* fails the row. On
 * Ctrl-C / SIGTERM: no new row or migration starts, the same stop, then every
 * process whose arguments name one of this run's namespaces
 * (bench-mig-<pid>-*) is SIGKILLed and its files removed; the process exits
 * 128 + the signal (a second signal: at once).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { constants, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { attach, connectCluster, type Cluster as ClusterHandle, type Endpoint, type Node } from '../../lib/index.js';
import { controlRequest } from '../../lib/agent/control.js';
import type { MigrationRecord, MigrationsList } from '../../lib/migration/index.js';
import type { HopRecord, Track } from '../migration-service.js';
import type { LoadClientResult } from '../migration-client.js';
import { percentile } from '../stats.js';
import { UsageError, type Suite, type SuiteOptions, type SuiteRun } from '../suite.js';
import { renderTable } from '../table.js';
import { checkShmGone, errorLine, freeUdpPorts, terminate } from '../transports/dvs-udp.js';

const MAIN_JS = fileURLToPath(new URL('../../lib/cli/main.js', import.meta.url));
const SERVICE_JS = fileURLToPath(new URL('../migration-service.js', import.meta.url));
const CLIENT_JS = fileURLToPath(new URL('../migration-client.js', import.meta.url));

type Backend = 'state' | 'ptrace' | 'criu';
const BACKENDS: readonly Backend[] = ['state', 'ptrace', 'criu'];
const SIZES: readonly number[] = [4 << 10, 1 << 20, 16 << 20];
const MAX_STATE = 256 << 20;
const NODES: readonly number[] = [1, 2, 3];
const DC = 1;
const SERVICE_EP = 10;
const PROBE_EP = 99;
const CLIENT_EP_BASE = 21;
const CLIENTS_PER_NODE = envInt('DVS_BENCH_MIG_CLIENTS', 3);
const TRACE_DIR = process.env.DVS_BENCH_MIG_TRACE;
/** One-way puts per call in a client's round. */
const PIPELINE = 2;
const MIGRATE_TIMEOUT_MS = 60_000;
const START_TIMEOUT_MS = 30_000;
const CALL_TIMEOUT_MS = 60_000;
/** After a migration returned, calls are not counted as steady state for this long. */
const SETTLE_MS = 100;
/** The first calls of the load (cold code paths) are not counted as steady state. */
const WARMUP_SKIP_MS = 300;
/** A row gives up after this many migrations in a row failed. */
const MAX_FAILED_IN_A_ROW = 3;
const STDERR_TAIL = 4000;

interface Plan {
  readonly migrations: number;
  /** Steady load before the first migration (ms). */
  readonly warmupMs: number;
  /** Steady load between two migrations (ms). */
  readonly gapMs: number;
}
const QUICK: Plan = { migrations: 6, warmupMs: 1000, gapMs: 150 };
const FULL: Plan = { migrations: 30, warmupMs: 2000, gapMs: 300 };

/** Targets of issue 5 (printed against, not asserted). */
const TARGET_STATE_BYTES = 1 << 20;
const TARGET_DOWNTIME_MS = 5;
const TARGET_TOTAL_MS = 50;
const ORIGINAL = 'the original system (DMTCP + kernel module): 1.30-2.04 s per migration, server frozen throughout, image of about 2.5 MB';

const PHASES = ['drain', 'snapshot', 'transfer', 'restore', 'resume'] as const;
type Phase = (typeof PHASES)[number];
const STEPS = ['prepare', 'start', 'quiesce', 'transfer', 'restoreAtDest', 'writeAtDest', 'adoptToServing', 'restoreCommit', 'commitOthers', 'commitSource'] as const;

export interface MigrationRow {
  readonly backend: Backend;
  /** The service's state (its key-value store), bytes. */
  readonly state_bytes: number;
  /** Image size (p50 of the records' imageBytes: the state plus the runtime's header and the carried messages). */
  image_bytes: number | null;
  /** Migrations that committed (the figures are over these). */
  migrations: number;
  /** Migrations that failed (rolled back or refused). */
  failed_migrations: number;
  downtime_ms_p50: number | null;
  downtime_ms_p99: number | null;
  downtime_ms_max: number | null;
  total_ms_p50: number | null;
  total_ms_p99: number | null;
  /** p99 of the calls that overlapped a migration. */
  client_p99_ms: number | null;
  client_max_ms: number | null;
  client_calls_during: number;
  steady_p50_ms: number | null;
  steady_p99_ms: number | null;
  steady_calls: number;
  lost: number | null;
  duplicated: number | null;
  reordered: number | null;
  /** Calls and one-way sends that failed at the client (must be 0). */
  failed: number | null;
  /** Replies that were not {s, n: s} (must be 0). */
  bad_replies: number | null;
  /** The service's state checksum and hop count after the last migration. */
  state_ok: boolean | null;
  /** snapshot() and restore() inside the service (p50). */
  checkpoint_ms_p50: number | null;
  restore_ms_p50: number | null;
  /** The orchestrator's own downtime: freeze (quiesce pushed at the source) → destination serving, seen by the source's agent. */
  orchestrator_downtime_ms_p50: number | null;
  orchestrator_downtime_ms_p99: number | null;
  /** Messages carried in the image (p50, max). */
  messages_moved_p50: number | null;
  messages_moved_max: number | null;
  /** Migrations whose destination process was started before the freeze (standby). */
  standby: number;
  /** p50 of each downtime phase (service clock points). */
  phases_ms_p50: Partial<Record<Phase, number>>;
  /** p50 of each orchestrator step (record.steps). */
  steps_ms_p50: Record<string, number>;
  calls: number;
  one_way: number;
  clients: number;
  samples: {
    downtime_ms: number[];
    total_ms: number[];
    orchestrator_downtime_ms: number[];
    phases_ms: Record<Phase, number[]>;
    /** The service's own record of each hop (monotonic-clock ms), in migration order. */
    hops: HopRecord[];
  };
  /** Why the row has no numbers (e.g. the backend does not exist yet). */
  error?: string;
  /** What went wrong while measuring (failed migrations, a lost state check…). */
  errors?: string[];
}

// ------------------------------------------------------- cleanup registry

const now = (): number => Number(process.hrtime.bigint()) / 1e6;

function envInt(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 64) throw new UsageError(`${name} must be an integer in [0, 64], got ${v}`);
  return n;
}

/** What a row holds right now, for the signal handlers. */
const live = {
  children: new Set<ChildProcess>(),
  servicePids: new Set<number>(),
  namespaces: new Set<string>(),
  dirs: new Set<string>(),
};

/** Whether `pid` is a `dvs serve` process of namespace `ns` (never signal a reused pid). */
function isServiceOf(pid: number, ns: string): boolean {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return cmd.includes('serve') && cmd.includes(ns);
  } catch {
    return false;
  }
}

/** `dvs serve` processes of namespace `ns`: those the harness knows, and any other (e.g. a standby a migration in progress started). */
function servicesOf(ns: string): number[] {
  const all = new Set(live.servicePids);
  for (const d of readdirSync('/proc')) if (/^\d+$/.test(d)) all.add(Number(d));
  return [...all].filter((pid) => pid !== process.pid && isServiceOf(pid, ns));
}

function killServices(ns: string, signal: NodeJS.Signals): number {
  let n = 0;
  for (const pid of servicesOf(ns)) {
    try {
      process.kill(pid, signal);
      n++;
    } catch {
      /* gone */
    }
  }
  return n;
}

/** Removes the files a namespace's migrations may leave: images (/dev/shm and the runtime's temp files) and service logs. */
function sweepFiles(ns: string): void {
  const rm = (dir: string, match: (f: string) => boolean): void => {
    if (!existsSync(dir)) return;
    for (const f of readdirSync(dir)) if (match(f)) rmSync(join(dir, f), { force: true });
  };
  rm('/dev/shm', (f) => f.startsWith(`dvs-mig.${ns}.`));
  rm(tmpdir(), (f) => f.startsWith(`dvs-${ns}-`) || [...live.servicePids].some((pid) => f.startsWith(`dvs-image-${pid}-`)));
}

/** Every process of this run (agents, services, clients): an argument names one of its namespaces. */
function ownProcesses(): number[] {
  const prefix = `bench-mig-${process.pid}-`;
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').some((a) => a.startsWith(prefix))) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** At exit or after a signal: whatever of this run still runs is killed, whatever it left is removed. */
function sweepNow(): void {
  for (const c of live.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const pid of ownProcesses()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  const prefix = `bench-mig-${process.pid}-`;
  for (const f of existsSync('/dev/shm') ? readdirSync('/dev/shm') : [])
    if (f.startsWith(`dvs.${prefix}`) || f.startsWith(`dvs-mig.${prefix}`)) rmSync(join('/dev/shm', f), { force: true });
  for (const f of readdirSync(tmpdir())) if (f.startsWith(`dvs-${prefix}`)) rmSync(join(tmpdir(), f), { force: true });
  for (const ns of live.namespaces) sweepFiles(ns);
  for (const d of live.dirs) rmSync(d, { recursive: true, force: true });
}

let signals = 0;
/** Set at the first signal: no new row or migration starts. */
let interrupted = false;
/** Ctrl-C / SIGTERM: stop what runs (agents cleanly if they go within 3 s), remove what is left, exit as the signal would. */
function onSignal(signal: NodeJS.Signals): void {
  const code = 128 + (constants.signals[signal] ?? 0);
  if (++signals > 1) {
    sweepNow();
    process.exit(code);
  }
  interrupted = true;
  process.stderr.write(`[migration] ${signal}: cleaning up (again to force)\n`);
  void (async () => {
    for (const ns of live.namespaces) killServices(ns, 'SIGTERM');
    await Promise.all([...live.children].map((c) => terminate(c)));
    sweepNow();
    process.exit(code);
  })();
}

function hookSignals(): () => void {
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', sweepNow);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('exit', sweepNow);
  };
}

// ------------------------------------------------------------- processes

/** A child process with a stderr tail and its stdout as lines. */
class Proc {
  stderr = '';
  private readonly lines: string[] = [];
  private waiter: (() => void) | null = null;
  readonly exited: Promise<void>;
  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    live.children.add(child);
    child.stderr?.setEncoding('utf8').on('data', (t: string) => {
      this.stderr = (this.stderr + t).slice(-STDERR_TAIL);
    });
    if (child.stdout) createInterface({ input: child.stdout }).on('line', (l) => {
      this.lines.push(l);
      this.waiter?.();
    });
    this.exited = new Promise((resolve) => child.once('exit', () => {
      live.children.delete(child);
      this.waiter?.();
      resolve();
    }));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The next stdout line that `match` accepts (others are dropped). */
  async line(match: (l: string) => boolean, ms: number, what: string): Promise<string> {
    const deadline = now() + ms;
    for (;;) {
      while (this.lines.length) {
        const l = this.lines.shift()!;
        if (match(l)) return l;
      }
      if (!this.running) throw new Error(`${this.name} exited (${this.child.signalCode ?? `status ${this.child.exitCode}`}) before ${what}: ${errorLine(this.stderr)}`);
      const left = deadline - now();
      if (left <= 0) throw new Error(`${this.name}: no ${what} within ${ms} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          this.waiter = null;
          resolve();
        };
      });
    }
  }
}

let rows = 0;

/** One row's cluster: agents, the service, the clients, the harness's probe and Cluster handles. */
class Rig {
  readonly ns = `bench-mig-${process.pid}-${rows++}`;
  readonly dir = mkdtempSync(join(tmpdir(), 'dvs-bench-mig-'));
  agents: Proc[] = [];
  handles: ClusterHandle[] = [];
  service: Proc | null = null;
  clients: Proc[] = [];
  node: Node | null = null;
  probe: Endpoint | null = null;
  /** The node the service is on, and its pid. */
  at = 1;
  pid = 0;

  constructor() {
    live.namespaces.add(this.ns);
    live.dirs.add(this.dir);
  }

  async start(stateBytes: number): Promise<void> {
    if (interrupted) throw new Error('interrupted');
    const ports = await freeUdpPorts(NODES.length);
    for (const n of NODES) {
      const peers = NODES.filter((m) => m !== n).map((m) => `${m}=127.0.0.1:${ports[m - 1]}`).join(',');
      const child = spawn(process.execPath, [MAIN_JS, 'agent', '--node', String(n), '--listen', `127.0.0.1:${ports[n - 1]}`, '--peers', peers,
        '--namespace', this.ns, '--dc', `${DC}:${NODES.join(',')}`, '--log-level', TRACE_DIR ? 'debug' : 'warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
      const a = new Proc(`agent ${n}`, child);
      if (TRACE_DIR) {
        const out = createWriteStream(join(TRACE_DIR, `${this.ns}-agent-${n}.log`));
        child.stderr?.on('data', (t: string) => out.write(t));
        child.once('exit', () => out.end());
      }
      this.agents.push(a);
    }
    const deadline = now() + START_TIMEOUT_MS;
    for (const n of NODES) {
      for (;;) {
        const a = this.agents[n - 1];
        if (!a.running) throw new Error(`agent ${n} exited at start: ${errorLine(a.stderr)}`);
        try {
          const s = (await controlRequest(this.ns, n, 'status', {}, 2000)) as { pid: number; peers: { node: number; up: boolean }[] };
          if (s.pid === a.child.pid && NODES.every((m) => m === n || s.peers.some((p) => p.node === m && p.up))) break;
        } catch {
          /* not listening yet */
        }
        if (now() > deadline) throw new Error(`agent ${n}: not up with its peers within ${START_TIMEOUT_MS} ms: ${errorLine(a.stderr)}`);
        await sleep(25);
      }
    }
    this.handles = await Promise.all(NODES.map((n) => connectCluster({ node: n, namespace: this.ns })));
    this.node = attach({ node: 1, namespace: this.ns });
    this.probe = this.node.bind(DC, PROBE_EP);
    // The service, on node 1, with its state filled.
    const svc = spawn(process.execPath, [MAIN_JS, 'serve', SERVICE_JS, String(stateBytes), '--dc', String(DC), '--ep', String(SERVICE_EP),
      '--node', '1', '--namespace', this.ns, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.service = new Proc('service', svc);
    this.pid = svc.pid!;
    live.servicePids.add(this.pid);
    await this.service.line((l) => l.includes('"serving"'), START_TIMEOUT_MS, 'its "serving" event');
    await Promise.all(this.handles.map((h) => h.waitForBind(DC, SERVICE_EP, { timeoutMs: START_TIMEOUT_MS })));
    for (;;) {
      const m = (await controlRequest(this.ns, 1, 'migrations', {}, 5000)) as MigrationsList;
      if (m.services.some((s) => s.dc === DC && s.ep === SERVICE_EP)) break;
      if (now() > deadline) throw new Error('the service did not register with its agent');
      await sleep(20);
    }
  }

  /** One client process per node; resolves once all are ready. */
  async startClients(): Promise<void> {
    if (CLIENTS_PER_NODE === 0) return;
    for (const n of NODES) {
      const first = CLIENT_EP_BASE + (n - 1) * CLIENTS_PER_NODE;
      const child = spawn(process.execPath, [CLIENT_JS, this.ns, String(n), String(DC), String(SERVICE_EP), String(first), String(CLIENTS_PER_NODE),
        String(PIPELINE), this.samplesFile(n)], { stdio: ['pipe', 'pipe', 'pipe'] });
      this.clients.push(new Proc(`clients on node ${n}`, child));
    }
    for (const c of this.clients) await c.line((l) => l === 'ready', START_TIMEOUT_MS, '"ready"');
  }

  samplesFile(n: number): string {
    return join(this.dir, `calls-${n}.f64`);
  }

  /** Stops the clients; their reports and call samples ([start, end] pairs). */
  async stopClients(): Promise<{ results: LoadClientResult[]; samples: Float64Array[] }> {
    for (const c of this.clients) c.child.stdin?.write('stop\n');
    const results: LoadClientResult[] = [];
    for (const c of this.clients) {
      const l = await c.line((x) => x.startsWith('{'), CALL_TIMEOUT_MS + 10_000, 'its report');
      results.push(...(JSON.parse(l) as { clients: LoadClientResult[] }).clients);
      await c.exited;
    }
    const samples = this.clients.map((_, i) => {
      const n = NODES[i];
      const b = readFileSync(this.samplesFile(n));
      return new Float64Array(b.buffer, b.byteOffset, b.byteLength / 8);
    });
    return { results, samples };
  }

  async ask<R>(req: object): Promise<R> {
    const m = await this.probe!.call(SERVICE_EP, JSON.stringify(req), { timeoutMs: CALL_TIMEOUT_MS });
    try {
      return JSON.parse(m.text()) as R;
    } finally {
      m.release();
    }
  }

  async migrate(to: number, method: Backend): Promise<MigrationRecord> {
    const r = await this.handles[this.at - 1].migrate({ dc: DC, ep: SERVICE_EP, to, method, timeoutMs: MIGRATE_TIMEOUT_MS });
    if (r.pid) live.servicePids.add(r.pid);
    this.at = to;
    this.pid = r.pid ?? 0;
    return r;
  }

  /** Everything stopped and removed; throws if an arena was left behind. */
  async stop(): Promise<void> {
    for (const c of this.clients) if (c.running) c.child.kill('SIGKILL');
    await Promise.all(this.clients.map((c) => c.exited));
    for (const h of this.handles) h.close();
    this.handles = [];
    this.node?.detach();
    this.node = null;
    // The serving process stops after its current message and unbinds.
    killServices(this.ns, 'SIGTERM');
    const deadline = now() + 5000;
    while (servicesOf(this.ns).length && now() < deadline) await sleep(20);
    killServices(this.ns, 'SIGKILL');
    if (this.service) await Promise.race([this.service.exited, sleep(3000)]);
    await Promise.all(this.agents.map((a) => terminate(a.child)));
    sweepFiles(this.ns);
    rmSync(this.dir, { recursive: true, force: true });
    live.dirs.delete(this.dir);
    live.namespaces.delete(this.ns);
    live.servicePids.clear();
    checkShmGone(this.ns);
  }
}

// ------------------------------------------------------------- measuring

const r2 = (x: number): number => Math.round(x * 100) / 100;
const pct = (xs: readonly number[], q: number): number | null => (xs.length === 0 ? null : r2(percentile(xs, q)));

function emptyRow(backend: Backend, stateBytes: number): MigrationRow {
  return {
    backend,
    state_bytes: stateBytes,
    image_bytes: null,
    migrations: 0,
    failed_migrations: 0,
    downtime_ms_p50: null,
    downtime_ms_p99: null,
    downtime_ms_max: null,
    total_ms_p50: null,
    total_ms_p99: null,
    client_p99_ms: null,
    client_max_ms: null,
    client_calls_during: 0,
    steady_p50_ms: null,
    steady_p99_ms: null,
    steady_calls: 0,
    lost: null,
    duplicated: null,
    reordered: null,
    failed: null,
    bad_replies: null,
    state_ok: null,
    checkpoint_ms_p50: null,
    restore_ms_p50: null,
    orchestrator_downtime_ms_p50: null,
    orchestrator_downtime_ms_p99: null,
    messages_moved_p50: null,
    messages_moved_max: null,
    standby: 0,
    phases_ms_p50: {},
    steps_ms_p50: {},
    calls: 0,
    one_way: 0,
    clients: NODES.length * CLIENTS_PER_NODE,
    samples: { downtime_ms: [], total_ms: [], orchestrator_downtime_ms: [], phases_ms: { drain: [], snapshot: [], transfer: [], restore: [], resume: [] }, hops: [] },
  };
}

/** Splits call samples into those overlapping a migration window and steady ones. */
function classify(samples: readonly Float64Array[], windows: readonly [number, number][], loadStart: number): { during: number[]; steady: number[] } {
  const during: number[] = [];
  const steady: number[] = [];
  for (const s of samples)
    for (let i = 0; i + 1 < s.length; i += 2) {
      const t0 = s[i];
      const t1 = s[i + 1];
      const ms = t1 - t0;
      if (windows.some(([a, b]) => t0 < b && t1 > a)) during.push(ms);
      else if (t0 >= loadStart + WARMUP_SKIP_MS && !windows.some(([a, b]) => t0 < b + SETTLE_MS && t1 > a)) steady.push(ms);
    }
  return { during, steady };
}

/** Whether `backend` can migrate at all: asks it to move the service to its own node (refused either way; nothing moves). */
async function probeBackend(rig: Rig, backend: Backend): Promise<string | null> {
  try {
    await rig.handles[rig.at - 1].migrate({ dc: DC, ep: SERVICE_EP, to: rig.at, method: backend, timeoutMs: MIGRATE_TIMEOUT_MS });
    return null;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'EDVSNOSYS') return `backend not available yet (issue 6): cluster.migrate({method: '${backend}'}) answers EDVSNOSYS`;
    return null;  // EDVSINVAL "already on node": the backend exists
  }
}

async function measureRow(backend: Backend, stateBytes: number, plan: Plan, log: (line: string) => void): Promise<MigrationRow> {
  const row = emptyRow(backend, stateBytes);
  const rig = new Rig();
  const errors: string[] = [];
  try {
    await rig.start(stateBytes);
    const unavailable = await probeBackend(rig, backend);
    if (unavailable !== null) {
      row.error = unavailable;
      return row;
    }
    await rig.startClients();
    const loadStart = now();
    await sleep(plan.warmupMs);
    const windows: [number, number][] = [];
    const records: MigrationRecord[] = [];
    const mlog: HopRecord[] = [];
    let failedInARow = 0;
    for (let i = 1; i <= plan.migrations && !interrupted; i++) {
      const from = rig.at;
      const to = (from % NODES.length) + 1;
      const w0 = now();
      try {
        const r = await rig.migrate(to, backend);
        const w1 = now();
        windows.push([w0 + (r.steps.prepare ?? 0), w1]);
        records.push(r);
        failedInARow = 0;
        log(`${backend} ${sizeLabel(stateBytes)} #${i} ${from}→${to}: downtime ${r2(r.downtimeMs ?? NaN)} ms (orchestrator), total ${r2(r.totalMs ?? NaN)} ms, ` +
          `image ${r.imageBytes} B, ${r.messages ?? 0} message(s) moved`);
      } catch (e) {
        windows.push([w0, now()]);
        row.failed_migrations++;
        errors.push(`migration #${i} ${from}→${to}: ${(e as Error).message}`);
        log(`${backend} ${sizeLabel(stateBytes)} #${i} ${from}→${to} failed: ${(e as Error).message}`);
        // A rolled-back service is still where it was; a failure after the destination committed moved it.
        const where = rig.handles[0].locate(DC, SERVICE_EP);
        if (where) rig.at = where.node;
        if (++failedInARow >= MAX_FAILED_IN_A_ROW) {
          errors.push(`${MAX_FAILED_IN_A_ROW} migrations failed in a row: the row stops`);
          break;
        }
      }
      try {
        mlog.push(...(await rig.ask<{ log: HopRecord[] }>({ op: 'mlog' })).log);
      } catch (e) {
        errors.push(`after migration #${i}: the service's hop log: ${(e as Error).message}`);
      }
      await sleep(plan.gapMs);
    }
    const { results, samples } = await rig.stopClients();
    const stats = await rig.ask<{ clients: Record<string, Track> }>({ op: 'stats' });
    mlog.push(...(await rig.ask<{ log: HopRecord[] }>({ op: 'mlog' })).log);
    const verify = await rig.ask<{ ok: boolean; hops: number; bytes: number }>({ op: 'verify' });
    // Sequence accounting.
    let lost = 0;
    let dup = 0;
    let reord = 0;
    let failed = 0;
    let bad = 0;
    for (const c of results) {
      const t = stats.clients[c.c] ?? { next: 1, n: 0, dup: 0, reord: 0, missing: [] };
      lost += c.seqs - (t.n - t.dup);
      dup += t.dup;
      reord += t.reord;
      failed += c.failed;
      bad += c.badReplies;
      row.calls += c.calls;
      row.one_way += c.sent;
      for (const e of c.errors) if (errors.length < 50) errors.push(`client ${c.c}: ${e}`);
    }
    if (results.length) Object.assign(row, { lost, duplicated: dup, reordered: reord, failed, bad_replies: bad });
    row.state_ok = verify.ok && verify.hops === records.length && verify.bytes === stateBytes;
    if (!row.state_ok) errors.push(`state check after ${records.length} migrations: ${JSON.stringify(verify)}`);
    // Latency during migrations vs steady state.
    const { during, steady } = classify(samples, windows, loadStart);
    row.client_calls_during = during.length;
    row.steady_calls = steady.length;
    row.client_p99_ms = pct(during, 99);
    row.client_max_ms = pct(during, 100);
    row.steady_p50_ms = pct(steady, 50);
    row.steady_p99_ms = pct(steady, 99);
    // Per migration: the orchestrator's records, the service's hop records.
    row.migrations = records.length;
    row.standby = records.filter((r) => r.standby).length;
    const s = row.samples;
    s.total_ms = records.map((r) => r2(r.totalMs ?? NaN));
    s.orchestrator_downtime_ms = records.map((r) => r2(r.downtimeMs ?? NaN));
    for (const r of records) {
      const h = mlog.find((x) => x.dstPid === r.pid);
      if (!h) {
        errors.push(`migration ${r.id} to pid ${r.pid}: no hop record in the service's log`);
        continue;
      }
      s.hops.push(h);
      // An idle service (no load) has no last message at the source nor a first one at the destination.
      const from = h.lastSrc > 0 && CLIENTS_PER_NODE > 0 ? h.lastSrc : null;
      const first = CLIENTS_PER_NODE > 0 ? h.first : null;
      if (from !== null && first !== null) s.downtime_ms.push(r2(first - from));
      const ph: Record<Phase, number | null> = {
        drain: from === null ? null : h.snap0 - from,
        snapshot: h.snap1 - h.snap0,
        transfer: h.rest0 - h.snap1,
        restore: h.rest1 - h.rest0,
        resume: first === null ? null : first - h.rest1,
      };
      for (const k of PHASES) if (ph[k] !== null) s.phases_ms[k].push(r2(ph[k]));
    }
    row.downtime_ms_p50 = pct(s.downtime_ms, 50);
    row.downtime_ms_p99 = pct(s.downtime_ms, 99);
    row.downtime_ms_max = pct(s.downtime_ms, 100);
    row.total_ms_p50 = pct(s.total_ms, 50);
    row.total_ms_p99 = pct(s.total_ms, 99);
    row.orchestrator_downtime_ms_p50 = pct(s.orchestrator_downtime_ms, 50);
    row.orchestrator_downtime_ms_p99 = pct(s.orchestrator_downtime_ms, 99);
    row.checkpoint_ms_p50 = pct(s.phases_ms.snapshot, 50);
    row.restore_ms_p50 = pct(s.phases_ms.restore, 50);
    for (const k of PHASES) if (s.phases_ms[k].length) row.phases_ms_p50[k] = pct(s.phases_ms[k], 50)!;
    for (const k of STEPS) {
      const xs = records.map((r) => r.steps[k]).filter((x): x is number => typeof x === 'number');
      if (xs.length) row.steps_ms_p50[k] = pct(xs, 50)!;
    }
    const img = records.map((r) => r.imageBytes).filter((x): x is number => typeof x === 'number');
    row.image_bytes = img.length ? percentile(img, 50) : null;
    const moved = records.map((r) => r.messages ?? 0);
    row.messages_moved_p50 = moved.length ? percentile(moved, 50) : null;
    row.messages_moved_max = moved.length ? Math.max(...moved) : null;
    return row;
  } catch (e) {
    errors.push((e as Error).message);
    log(`${backend} ${sizeLabel(stateBytes)}: ${(e as Error).message}`);
    return row;
  } finally {
    try {
      await rig.stop();
    } catch (e) {
      errors.push(`teardown: ${(e as Error).message}`);
    }
    if (errors.length) row.errors = errors;
  }
}

// ------------------------------------------------------------- reporting

function sizeLabel(bytes: number): string {
  if (bytes >= 1 << 20 && bytes % (1 << 20) === 0) return `${bytes / (1 << 20)} MiB`;
  if (bytes >= 1 << 10 && bytes % (1 << 10) === 0) return `${bytes / (1 << 10)} KiB`;
  return `${bytes} B`;
}

const cell = (x: number | null | undefined, unit = ''): string => (x === null || x === undefined ? '–' : `${x}${unit}`);

const NOTES: readonly string[] = [
  `Each row: a fresh cluster of 3 agent processes on 127.0.0.1, the bench service (bench/migration-service.ts: a key-value store of the row's state size in 1 KiB values, binary snapshot/restore that copy the whole store) under \`dvs serve\` on node 1, ${CLIENTS_PER_NODE} clients on every node (closed loop: ${PIPELINE} one-way puts, then one call; every message with the client's next sequence number). Migrations go round-robin 1→2→3→1 through the source node's connectCluster handle, with steady load between them.`,
  'downtime: last handle() at the source → first handle() at the destination (the first call served there), both on the host\'s monotonic clock inside the service; orchestrator downtime: freeze (mig-quiesce pushed) → the destination\'s commit answer at the source agent, minus what the destination did after serving (record.downtimeMs). total: START → last COMMIT (record.totalMs), without PREPARE (the standby process start, outside the freeze).',
  `Phases of the downtime (service clock): drain = last handle at the source → snapshot() called (quiesce push, current message, fences, mailbox); snapshot = snapshot() (the checkpoint); transfer = snapshot() returned → restore() called (image encoded and written to a file, read by the source agent, CONTROL chunks to the destination agent, written to /dev/shm, mig-restore pushed, read and decoded by the standby process); restore = restore(); resume = restore() returned → first handle() (mig-restored, adopt, mig-adopt, node.adopt, the first message).`,
  `client p99: calls overlapping a migration (from about START to migrate() returning); steady: calls outside every migration (+${SETTLE_MS} ms), after the first ${WARMUP_SKIP_MS} ms of load. lost = seqs used − distinct seqs the service saw; duplicated = a seq seen twice; reordered = a seq seen after a later one; failed = calls/sends that threw at the client; state_ok = the store's SHA-256 and hop count intact after the last hop. Percentiles are nearest-rank (with 30 samples p99 is the maximum).`,
];

function render(rows: readonly MigrationRow[], plan: Plan): string {
  const measured = rows.filter((r) => r.error === undefined);
  const table = renderTable(
    `Migration (${plan.migrations} migrations per row under load; times in ms)`,
    ['backend', 'state', 'image B', 'migr.', 'failed', 'downtime p50', 'p99', 'max', 'orch. p50', 'total p50', 'p99', 'client p99', 'max', 'steady p99', 'lost', 'dup', 'reord', 'state ok'],
    rows.map((r) => [r.backend, sizeLabel(r.state_bytes), cell(r.image_bytes), r.error ? '–' : String(r.migrations), r.error ? '–' : String(r.failed_migrations),
      cell(r.downtime_ms_p50), cell(r.downtime_ms_p99), cell(r.downtime_ms_max), cell(r.orchestrator_downtime_ms_p50), cell(r.total_ms_p50), cell(r.total_ms_p99),
      cell(r.client_p99_ms), cell(r.client_max_ms), cell(r.steady_p99_ms), cell(r.lost), cell(r.duplicated), cell(r.reordered),
      r.state_ok === null ? '–' : r.state_ok ? 'yes' : 'NO']),
  );
  const phases = renderTable(
    'Where the downtime goes (p50 per phase, service clock, ms)',
    ['backend', 'state', ...PHASES, 'downtime p50', 'checkpoint', 'restore', 'msgs moved p50/max'],
    measured.map((r) => [r.backend, sizeLabel(r.state_bytes), ...PHASES.map((k) => cell(r.phases_ms_p50[k])), cell(r.downtime_ms_p50), cell(r.checkpoint_ms_p50), cell(r.restore_ms_p50),
      `${cell(r.messages_moved_p50)}/${cell(r.messages_moved_max)}`]),
  );
  const steps = renderTable(
    'Orchestrator steps (p50 of record.steps, ms; prepare is outside START..COMMIT)',
    ['backend', 'state', ...STEPS],
    measured.map((r) => [r.backend, sizeLabel(r.state_bytes), ...STEPS.map((k) => cell(r.steps_ms_p50[k]))]),
  );
  const verdict = (v: number | null, target: number): string => (v === null ? 'not measured' : v <= target ? 'met' : 'missed');
  const target = rows.find((r) => r.backend === 'state' && r.state_bytes === TARGET_STATE_BYTES && r.error === undefined && r.migrations > 0);
  const clean = measured.filter((r) => r.migrations > 0 && r.lost !== null);
  const dirty = clean.filter((r) => r.lost !== 0 || r.duplicated !== 0 || r.reordered !== 0);
  const nearOriginal = rows.filter((r) => r.backend === 'state' && r.error === undefined && r.downtime_ms_p50 !== null);
  const targets = [
    'Targets (issue 5; printed, not asserted):',
    `  reference: ${ORIGINAL}; dvs state rows: downtime p50 ${nearOriginal.map((r) => `${cell(r.downtime_ms_p50)} ms at ${sizeLabel(r.state_bytes)}`).join(', ') || 'not measured'}`,
    target
      ? `  state backend, 1 MiB: downtime p50 <= ${TARGET_DOWNTIME_MS} ms: ${cell(target.downtime_ms_p50, ' ms')} (${verdict(target.downtime_ms_p50, TARGET_DOWNTIME_MS)}); total <= ${TARGET_TOTAL_MS} ms (p50): ${cell(target.total_ms_p50, ' ms')} (${verdict(target.total_ms_p50, TARGET_TOTAL_MS)})`
      : '  state backend, 1 MiB: no measured row in this run',
    clean.length === 0
      ? '  lost = duplicated = reordered = 0 in every row: no row with client load'
      : `  lost = duplicated = reordered = 0 in every row: ${dirty.length === 0 ? `met (${clean.length} measured rows)` : `missed (${dirty.map((r) => `${r.backend} ${sizeLabel(r.state_bytes)}: lost ${r.lost}, dup ${r.duplicated}, reord ${r.reordered}`).join('; ')})`}`,
  ];
  const failedCalls = measured.filter((r) => (r.failed ?? 0) > 0 || (r.bad_replies ?? 0) > 0 || r.state_ok === false);
  if (failedCalls.length) targets.push(`  client errors / bad replies / state: ${failedCalls.map((r) => `${r.backend} ${sizeLabel(r.state_bytes)}: failed ${r.failed}, bad replies ${r.bad_replies}, state ok ${r.state_ok}`).join('; ')}`);
  const skipped = rows.filter((r) => r.error !== undefined).map((r) => `  ${r.backend} ${sizeLabel(r.state_bytes)}: ${r.error}`);
  const errors = rows.flatMap((r) => (r.errors ?? []).slice(0, 10).map((e) => `  ${r.backend} ${sizeLabel(r.state_bytes)}: ${e}`));
  const load = measured.map((r) => `${r.backend} ${sizeLabel(r.state_bytes)}: ${r.calls} calls + ${r.one_way} one-way by ${r.clients} clients, steady p50 ${cell(r.steady_p50_ms)} ms (${r.steady_calls} calls), ${r.client_calls_during} calls during migrations`);
  return [
    table,
    phases,
    steps,
    targets.join('\n') + '\n',
    load.length ? ['Load:', ...load.map((l) => `  ${l}`)].join('\n') + '\n' : '',
    skipped.length ? ['Not measured:', ...skipped].join('\n') + '\n' : '',
    ['Notes:', ...NOTES.map((n) => `  ${n}`)].join('\n') + '\n',
    errors.length ? ['Errors:', ...errors].join('\n') + '\n' : '',
  ].filter((x) => x !== '').join('\n');
}

// ------------------------------------------------------------------ suite

function backendsOf(opts: SuiteOptions): readonly Backend[] {
  if (opts.only === undefined) return BACKENDS;
  for (const b of opts.only) if (!(BACKENDS as readonly string[]).includes(b)) throw new UsageError(`migration: unknown backend "${b}" (available: ${BACKENDS.join(', ')})`);
  return BACKENDS.filter((b) => opts.only!.includes(b));
}

function sizesOf(opts: SuiteOptions): readonly number[] {
  const sizes = opts.sizes ?? SIZES;
  for (const n of sizes) if (n > MAX_STATE) throw new UsageError(`migration: --sizes are state sizes in bytes, at most ${MAX_STATE}: ${n}`);
  return sizes;
}

export async function runMigration(opts: SuiteOptions, log: (line: string) => void): Promise<SuiteRun> {
  const backends = backendsOf(opts);
  const sizes = sizesOf(opts);
  for (const f of [SERVICE_JS, CLIENT_JS, MAIN_JS]) if (!existsSync(f)) throw new UsageError(`migration: ${f} is missing (run \`npx tsc -p .\`)`);
  const plan = opts.quick ? QUICK : FULL;
  const loadStart = loadavg().map((x) => Math.round(x * 100) / 100);
  log(`load average at start: ${loadStart.join(' ')}`);
  const unhook = hookSignals();
  const results: MigrationRow[] = [];
  try {
    for (const backend of backends) {
      let unavailable: string | null = null;
      for (const size of sizes) {
        if (interrupted) break;
        if (unavailable !== null) {
          results.push({ ...emptyRow(backend, size), error: unavailable });
          continue;
        }
        const row = await measureRow(backend, size, plan, log);
        if (row.error !== undefined) unavailable = row.error;
        log(row.error !== undefined
          ? `${backend} ${sizeLabel(size)}: ${row.error}`
          : `${backend} ${sizeLabel(size)}: downtime p50 ${cell(row.downtime_ms_p50)} ms, total p50 ${cell(row.total_ms_p50)} ms, client p99 ${cell(row.client_p99_ms)} ms ` +
            `(steady ${cell(row.steady_p99_ms)} ms), lost ${cell(row.lost)}, dup ${cell(row.duplicated)}, reord ${cell(row.reordered)} (${row.migrations} migrations)`);
        results.push(row);
      }
    }
  } finally {
    unhook();
  }
  const loadEnd = loadavg().map((x) => Math.round(x * 100) / 100);
  const targets = {
    original_s: [1.3, 2.04],
    original_image_bytes: 2.5e6,
    state_1mib_downtime_ms_p50: TARGET_DOWNTIME_MS,
    state_1mib_total_ms: TARGET_TOTAL_MS,
    lost_duplicated_reordered: 0,
  };
  return {
    json: { results, plan, clients_per_node: CLIENTS_PER_NODE, pipeline: PIPELINE, load_average: { start: loadStart, end: loadEnd }, targets, notes: NOTES },
    text: render(results, plan) + `\nLoad average (1, 5, 15 min) at start ${loadStart.join(' ')}, at end ${loadEnd.join(' ')}.\n`,
  };
}

export const migrationSuite: Suite = {
  name: 'migration',
  run: runMigration,
};
