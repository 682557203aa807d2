// demo.ts — `dvs demo` (`npm start`): the project's demo. On this one
// machine: a 3-node cluster (three `dvs agent` child processes on 127.0.0.1),
// a key-value service (examples/kv.js under `dvs serve`), clients on every
// node calling it and sending it one-way messages without pause, and the
// service migrated round-robin around the nodes while they do. One line per
// migration (from → to, downtime, messages held, the clients' latency during
// it), then a summary: calls made, failed, lost, duplicated, reordered (the
// service counts every sender's sequence numbers; the clients compare). Exit
// status 0 when every migration committed and those four are 0.
// `dvs demo local`: the earlier demo, ping-pong between two processes on one node.
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { controlRequest } from '../agent/control.js';
import { connectCluster, type Cluster } from '../cluster/cluster.js';
import type { MigrationRecord, MigrationsList } from '../migration/index.js';
import { attach } from '../node.js';
import { expectArgs, intFlag, type Flags } from './args.js';
import type { DemoClientStats } from './demo-client.js';

export const demoHelp =
  'demo [--migrations N | --forever] [--clients N] [--interval MS] [--state BYTES]    3 nodes, a key-value service migrating round-robin under clients on every node\n' +
  '  dvs demo local [--seconds N] [--size BYTES]    ping-pong between two processes on one node, live latency';

const DC = 1;
const SERVICE = 10;
const NODES = [1, 2, 3];
const CLI = fileURLToPath(new URL('./main.js', import.meta.url));

const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pct(sorted: ArrayLike<number>, q: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))] : NaN;
}

function fmt(ms: number): string {
  return Number.isNaN(ms) ? '   -  ' : ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0);
}

/** The package root (it holds examples/). */
function packageRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) {
    const up = dirname(d);
    if (up === d) throw new Error('package.json not found');
    d = up;
  }
  return d;
}

async function freePorts(n: number): Promise<number[]> {
  const out: number[] = [];
  while (out.length < n) {
    const s = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(0, '127.0.0.1', () => resolve());
    });
    const p = s.address().port;
    await new Promise<void>((r) => s.close(() => r()));
    if (!out.includes(p)) out.push(p);
  }
  return out;
}

/** A child process of the demo: its own process group (Ctrl-C reaches the demo only, which stops everything in order). */
class Proc {
  readonly child: ChildProcess;
  private buf = '';
  private readonly lines: string[] = [];
  private waiter: ((l: string | null) => void) | null = null;
  errTail = '';

  constructor(
    readonly name: string,
    args: string[],
    stdin: 'pipe' | 'ignore' = 'ignore',
  ) {
    this.child = spawn(process.execPath, [CLI, ...args], { stdio: [stdin, 'pipe', 'pipe'], detached: true });
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const l = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        if (this.waiter) {
          const w = this.waiter;
          this.waiter = null;
          w(l);
        } else this.lines.push(l);
      }
    });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => {
      this.errTail = (this.errTail + d).slice(-4000);
    });
    this.child.stdin?.on('error', () => {});
    this.child.on('exit', () => {
      const w = this.waiter;
      this.waiter = null;
      w?.(null);
    });
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The next stdout line (rejects if the process exits or `ms` passes). */
  async line(ms: number): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return l;
    if (!this.alive) throw new Error(`${this.name} exited (${this.child.exitCode ?? this.child.signalCode}): ${this.errTail.trim()}`);
    let timer: NodeJS.Timeout | undefined;
    const got = await Promise.race([
      new Promise<string | null>((r) => (this.waiter = r)),
      new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms))),
    ]).finally(() => clearTimeout(timer));
    if (got === undefined) {
      this.waiter = null;
      throw new Error(`${this.name}: no answer within ${ms} ms`);
    }
    if (got === null) throw new Error(`${this.name} exited (${this.child.exitCode ?? this.child.signalCode}): ${this.errTail.trim()}`);
    return got;
  }

  async json<T>(ms: number, pick: (v: Record<string, unknown>) => boolean): Promise<T> {
    for (;;) {
      const l = await this.line(ms);
      try {
        const v = JSON.parse(l) as Record<string, unknown>;
        if (pick(v)) return v as T;
      } catch {
        /* not JSON */
      }
    }
  }

  private exited(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.child.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  send(line: string): void {
    this.child.stdin?.write(line + '\n');
  }

  kill(sig: NodeJS.Signals): void {
    if (this.alive) this.child.kill(sig);
  }

  async stop(sig: NodeJS.Signals, ms: number): Promise<void> {
    if (!this.alive) return;
    this.kill(sig);
    await this.exited(ms);
    if (this.alive) {
      this.kill('SIGKILL');
      await this.exited(2000);
    }
  }
}

interface Totals {
  calls: number;
  sends: number;
  failed: number;
  lost: number;
  duplicated: number;
  reordered: number;
  errors: string[];
}

/** What the clients made against what the service counted for each of them. */
function tally(clients: DemoClientStats[]): Totals {
  const t: Totals = { calls: 0, sends: 0, failed: 0, lost: 0, duplicated: 0, reordered: 0, errors: [] };
  for (const c of clients) {
    t.calls += c.calls;
    t.sends += c.sends;
    t.failed += c.failed;
    t.errors.push(...c.errors.map((e) => `${c.id}: ${e}`));
    if (!c.stats) {
      t.errors.push(`${c.id}: the service has no record of this client`);
      t.lost += c.calls + c.sends;
      continue;
    }
    for (const [made, k] of [
      [c.calls, c.stats.calls],
      [c.sends, c.stats.sends],
    ] as const) {
      // kv.js counts every message of the sender (and the final 'stats' call is one more call).
      const count = k === c.stats.calls ? k.count - 1 : k.count;
      const lost = Math.max(0, made - count);
      const dup = Math.max(0, count - made);
      t.lost += lost;
      t.duplicated += dup;
      // A seq at or below the last one seen, that is not a duplicate, came out of order; so does a gap not explained by a loss.
      t.reordered += Math.max(0, k.dup - dup) + Math.max(0, k.gap - lost);
      if (made && k.last !== made - 1) t.errors.push(`${c.id}: the service's last seq is ${k.last}, the client's ${made - 1}`);
    }
  }
  return t;
}

export async function demo(f: Flags): Promise<number> {
  if (f.positional[0] === 'local') return pingpong({ ...f, positional: f.positional.slice(1) });
  expectArgs(f, demoHelp, { values: ['migrations', 'clients', 'interval', 'state'], booleans: ['forever'] });
  const forever = f.flags.has('forever');
  const migrations = intFlag(f, 'migrations', 10, 1, 1_000_000);
  const nClients = intFlag(f, 'clients', 6, 1, 300);
  const interval = intFlag(f, 'interval', 300, 0, 600_000);
  const stateBytes = intFlag(f, 'state', 0, 0, 64 << 20);
  const ns = `demo-${process.pid}`;
  const kv = join(packageRoot(), 'examples', 'kv.js');
  const procs: Proc[] = [];
  const servicePids = new Set<number>();
  let stopRequested = false;
  let hard = false;
  const out = (s: string): void => void process.stdout.write(s + '\n');

  const cleanup = async (): Promise<void> => {
    for (const pid of servicePids)
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    await Promise.all(procs.filter((p) => p.name.startsWith('clients')).map((p) => p.stop('SIGKILL', 2000)));
    await Promise.all(procs.filter((p) => !p.name.startsWith('clients')).map((p) => p.stop('SIGTERM', 5000)));
    for (const pid of servicePids)
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    for (const file of readdirSync(tmpdir())) if (file.startsWith(`dvs-${ns}-`)) rmSync(join(tmpdir(), file), { force: true });
  };
  // Whatever happens, nothing is left running (synchronous kill at exit).
  const onExit = (): void => {
    for (const p of procs) p.kill('SIGKILL');
    for (const pid of servicePids)
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
  };
  process.on('exit', onExit);
  const onSigint = (): void => {
    if (stopRequested) {
      hard = true;
      out('\ndvs demo: stopping now');
      void cleanup().then(() => process.exit(130));
      return;
    }
    stopRequested = true;
    out('\ndvs demo: stopping after this migration (Ctrl-C again to stop at once)');
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);

  const clusters: Cluster[] = [];
  try {
    // ---- the cluster
    const ports = await freePorts(3);
    for (const n of NODES) {
      const peers = NODES.filter((m) => m !== n).map((m) => `${m}=127.0.0.1:${ports[m - 1]}`).join(',');
      procs.push(new Proc(`agent ${n}`, ['agent', '--node', String(n), '--listen', `127.0.0.1:${ports[n - 1]}`, '--peers', peers, '--namespace', ns, '--dc', `${DC}:${NODES.join(',')}`, '--log-level', 'warn']));
    }
    const agents = [...procs];
    const deadline = Date.now() + 30000;
    for (const n of NODES) {
      for (;;) {
        const s = (await controlRequest(ns, n, 'status', {}, 2000).catch(() => null)) as { peers: { up: boolean }[] } | null;
        if (s && s.peers.length === 2 && s.peers.every((p) => p.up)) break;
        if (!agents[n - 1].alive) throw new Error(`the agent of node ${n} exited: ${agents[n - 1].errTail.trim()}`);
        if (Date.now() > deadline) throw new Error(`the agents did not link up within 30 s: ${agents.map((a) => a.errTail.trim()).join(' | ')}`);
        await sleep(25);
      }
    }
    for (const n of NODES) clusters.push(await connectCluster({ node: n, namespace: ns }));
    // ---- the service, on node 1
    const svc = new Proc('service', ['serve', kv, '--dc', String(DC), '--ep', String(SERVICE), '--node', '1', '--namespace', ns, '--json']);
    procs.push(svc);
    servicePids.add(svc.child.pid!);
    await svc.json(20000, (v) => v.event === 'serving');
    for (const c of clusters) await c.waitForBind(DC, SERVICE, { timeoutMs: 10000 });
    while (!((await controlRequest(ns, 1, 'migrations')) as MigrationsList).services.some((s) => s.ep === SERVICE)) await sleep(20);
    const svcCall = attach({ node: 1, namespace: ns });
    const probe = svcCall.bind(DC, 99);
    const ask = async (req: object): Promise<Record<string, unknown>> => {
      const m = await probe.call(SERVICE, JSON.stringify(req), { timeoutMs: 60000 });
      const v = JSON.parse(m.text()) as Record<string, unknown>;
      m.release();
      return v;
    };
    await ask({ op: 'put', key: 'canary', value: 'tweety' });
    if (stateBytes) await ask({ op: 'fill', bytes: stateBytes });
    // ---- the clients, spread over the nodes
    const clients: Proc[] = [];
    let ep = 21;
    for (const n of NODES) {
      const k = Math.floor(nClients / 3) + (n - 1 < nClients % 3 ? 1 : 0);
      if (!k) continue;
      const c = new Proc(`clients on node ${n}`, ['demo-client', ns, String(n), String(ep), String(k)], 'pipe');
      ep += k;
      procs.push(c);
      clients.push(c);
    }
    for (const c of clients) if ((await c.line(20000)) !== 'ready') throw new Error(`${c.name} did not start`);
    out(
      `dvs demo: 3 nodes on 127.0.0.1 (agents pids ${agents.map((a) => a.child.pid).join(', ')}, namespace ${ns}); ` +
        `key-value service examples/kv.js on DC ${DC} endpoint ${SERVICE}, node 1${stateBytes ? ` (${stateBytes} bytes of state)` : ''}; ` +
        `${nClients} clients on nodes ${NODES.join(', ')} calling it and sending it one-way messages without pause`,
    );
    out(`${forever ? 'migrating round-robin until Ctrl-C' : `${migrations} migrations round-robin`} (state backend), ${interval} ms apart:`);
    const windows = async (from: number, to: number, heldFrom = 0, heldTo = 0): Promise<{ lat: number[]; held: number }> => {
      const all: number[] = [];
      let held = 0;
      for (const c of clients) {
        c.send(`win ${from} ${to} ${heldFrom} ${heldTo}`);
        const w = await c.json<{ win: { lat: number[]; held: number } }>(20000, (v) => v.win !== undefined);
        all.push(...w.win.lat);
        held += w.win.held;
      }
      return { lat: all.sort((a, b) => a - b), held };
    };
    // ---- the migrations
    const recs: MigrationRecord[] = [];
    const during: number[] = [];
    const steady: number[] = [];
    let failedMigrations = 0;
    let at = 1;
    let steadyFrom = now();
    await sleep(interval);
    for (let i = 1; forever || i <= migrations; i++) {
      if (stopRequested) break;
      const to = (at % 3) + 1;
      const tA = now();
      const s = await windows(steadyFrom, tA);
      steady.push(...s.lat);
      let r: MigrationRecord;
      try {
        r = await clusters[(i - 1) % 3].migrate({ dc: DC, ep: SERVICE, to });
      } catch (e) {
        failedMigrations++;
        out(` #${String(i).padEnd(3)} node ${at} → node ${to}  FAILED: ${(e as Error).message}`);
        steadyFrom = now();
        await sleep(interval);
        continue;
      }
      const tB = now();
      servicePids.add(r.pid!);
      recs.push(r);
      at = to;
      await sleep(20);  // the calls released at the commit finish
      // The clients' calls that started while the migration ran (START to the last COMMIT), and those
      // that were waiting at some moment while the service was frozen (held).
      const w = await windows(r.at!.start, r.at!.end!, r.at!.freeze, r.at!.serving!);
      during.push(...w.lat);
      const canary = await ask({ op: 'get', key: 'canary' });
      const intact = canary.value === 'tweety';
      out(
        ` #${String(i).padEnd(3)} node ${r.from} → node ${r.to}   downtime ${fmt(r.downtimeMs!).padStart(5)} ms   total ${fmt(r.totalMs!).padStart(5)} ms   ` +
          `held ${String(w.held).padStart(2)} calls + ${String(r.messages ?? 0).padStart(2)} queued msgs   clients p50 ${fmt(pct(w.lat, 0.5)).padStart(5)} ms  p99 ${fmt(pct(w.lat, 0.99)).padStart(5)} ms` +
          (intact ? '' : '   STATE LOST'),
      );
      if (!intact) failedMigrations++;
      steadyFrom = now();
      if (!stopRequested) await sleep(interval);
    }
    const s = await windows(steadyFrom, now());
    steady.push(...s.lat);
    // ---- the verdict
    for (const c of clients) c.send('stop');
    const stats: DemoClientStats[] = [];
    for (const c of clients) stats.push(...(await c.json<{ clients: DemoClientStats[] }>(90000, (v) => Array.isArray(v.clients))).clients);
    svcCall.detach();
    const t = tally(stats);
    const dt = recs.map((r) => r.downtimeMs!).sort((a, b) => a - b);
    const tt = recs.map((r) => r.totalMs!).sort((a, b) => a - b);
    during.sort((a, b) => a - b);
    steady.sort((a, b) => a - b);
    out(
      `summary: ${recs.length} migrations committed${failedMigrations ? `, ${failedMigrations} FAILED` : ''}: downtime p50 ${fmt(pct(dt, 0.5))} ms, p99 ${fmt(pct(dt, 0.99))} ms; ` +
        `total p50 ${fmt(pct(tt, 0.5))} ms, p99 ${fmt(pct(tt, 0.99))} ms`,
    );
    out(`  client call latency: steady p50 ${fmt(pct(steady, 0.5))} ms, p99 ${fmt(pct(steady, 0.99))} ms; during migrations p50 ${fmt(pct(during, 0.5))} ms, p99 ${fmt(pct(during, 0.99))} ms, max ${fmt(pct(during, 1))} ms`);
    out(`  ${t.calls} calls and ${t.sends} one-way messages by ${stats.length} clients: failed ${t.failed}, lost ${t.lost}, duplicated ${t.duplicated}, reordered ${t.reordered}`);
    for (const e of t.errors.slice(0, 10)) out(`  ! ${e}`);
    const ok = !failedMigrations && !t.failed && !t.lost && !t.duplicated && !t.reordered && !t.errors.length && recs.length > 0;
    out(ok ? 'ok' : 'NOT OK');
    return ok ? 0 : 1;
  } finally {
    for (const c of clusters) c.close();
    if (!hard) await cleanup();
    process.off('exit', onExit);
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
  }
}

const SERVER_EP = 1;
const CLIENT_EP = 2;

/** `dvs demo local`: two processes on one node play ping-pong; live round-trip latency, async then spin. */
async function pingpong(f: Flags): Promise<number> {
  expectArgs(f, 'demo local [--seconds N] [--size BYTES]', { values: ['seconds', 'size'] });
  const seconds = intFlag(f, 'seconds', 3, 1, 3600);
  const size = intFlag(f, 'size', 64, 0, 1 << 20);
  const namespace = `demo-${process.pid}`;
  const node = attach({ node: 0, namespace });
  const child = spawn(process.execPath, [CLI, 'demo-peer', namespace], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const stop = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('SIGINT', stop);
  try {
    const [line] = (await Promise.race([once(child.stdout!, 'data'), once(child, 'exit')])) as [Buffer];
    if (!String(line).startsWith('ready')) throw new Error('demo peer did not start');
    const ep = node.bind(0, CLIENT_EP);
    const payload = new Uint8Array(size).fill(0x5a);
    process.stdout.write(`dvs demo local: ping-pong of ${size}-byte calls between pid ${process.pid} and pid ${child.pid} (node 0, /dev/shm/dvs.${namespace}.0)\n`);
    let total = 0;
    for (const mode of ['async', 'spin'] as const) {
      if (mode === 'spin') (await ep.call(SERVER_EP, 'mode:spin')).release();
      for (let s = 1; s <= seconds; s++) {
        const samples: number[] = [];
        const end = process.hrtime.bigint() + 1_000_000_000n;
        for (let t = process.hrtime.bigint(); t < end; ) {
          const r = mode === 'async' ? await ep.call(SERVER_EP, payload) : ep.callSync(SERVER_EP, payload, { spinUs: Infinity });
          const t2 = process.hrtime.bigint();
          if (r.length !== size) throw new Error('reply of the wrong size');
          r.release();
          samples.push(Number(t2 - t) / 1000);
          t = t2;
        }
        const sorted = Float64Array.from(samples).sort();
        total += samples.length;
        process.stdout.write(
          `  ${mode.padEnd(5)} t=${s}s  ${String(samples.length).padStart(7)} calls/s   rtt p50 ${pct(sorted, 0.5).toFixed(2).padStart(7)} µs   p99 ${pct(sorted, 0.99).toFixed(2).padStart(8)} µs\n`,
        );
      }
    }
    ep.sendSync(SERVER_EP, 'stop');
    await once(child, 'exit');
    process.stdout.write(`done: ${total} calls, 0 failed\n`);
    return 0;
  } finally {
    stop();
    node.detach();
  }
}

/** The local demo's server: echoes calls; "mode:spin" switches to a busy-polling loop; "stop" ends. */
export async function demoPeer(f: Flags): Promise<number> {
  const node = attach({ node: 0, namespace: f.positional[0] });
  const ep = node.bind(0, SERVER_EP);
  process.stdout.write('ready\n');
  let spin = false;
  for await (const m of ep) {
    if (m.kind === 'call') m.reply(m.payload);
    if (m.length === 9 && m.text() === 'mode:spin') {
      spin = true;
      break;
    }
    if (m.kind === 'send') break;
  }
  while (spin) {
    const m = ep.receiveSync({ spinUs: Infinity });
    if (m.kind === 'call') m.reply(m.payload);
    else spin = false;
    m.release();
  }
  node.detach();
  return 0;
}
