// migration-helpers.ts — shared by the migration tests (not a test itself):
// a 3-node cluster of `dvs agent` children with DC 1 on all three, the
// mig-kv service under `dvs serve`, client processes (mig-client fixture),
// and the cleanup of service processes that agents started (a migration's
// destination process is the agent's child, detached: killed by pid here).
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { attach, connectCluster, type Cluster, type Endpoint, type Node } from '../lib/index.js';
import type { MigrationRecord, MigrationsList } from '../lib/migration/index.js';
import type { ClientResult } from './fixtures/mig-client.js';
import { Child, fixturePath, sleep, spawnFixture, type T } from './helpers.js';
import { AgentProc, freeUdpPorts, spawnCli, startCluster, waitPeersUp } from './cluster-helpers.js';

export const DC = 1;
export const SERVICE_EP = 10;
export const SERVICE = fixturePath('mig-kv');

export interface ClientsReport {
  clients: ClientResult[];
  lat: { p50: number; p99: number; max: number; count: number };
  slow: [number, number][];
}

/** Every service process this test caused (started or migrated), killed at teardown. */
export class ServicePids {
  readonly pids = new Set<number>();
  constructor(t: T) {
    t.teardown(async () => {
      for (const pid of this.pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await sleep(50);
    });
  }
  add(pid: number | undefined): void {
    if (pid) this.pids.add(pid);
  }
}

export interface MigCluster {
  ns: string;
  agents: AgentProc[];
  /** A Cluster handle per node (index = node - 1). */
  clusters: Cluster[];
  /** The test's own attachment to node 1 (for checks). */
  node: Node;
  probe: Endpoint;
  pids: ServicePids;
}

/** Three agents (static peers, or with `registry` every part of the control plane in etcd). */
export async function startMigCluster(t: T, ns: string, opts: { deadAfterMs?: number; dcs?: string; registry?: string } = {}): Promise<MigCluster> {
  if (!existsSync(SERVICE)) throw new Error(`${SERVICE} is missing: run \`npx tsc -p tsconfig.json\` first`);
  const extra = ['--dc', opts.dcs ?? '1:1,2,3', ...(opts.registry ? ['--registry', opts.registry] : [])];
  let agents: AgentProc[];
  if (opts.registry) {
    const ports = await freeUdpPorts(3);
    agents = [1, 2, 3].map((n, i) => new AgentProc(t, { node: n, port: ports[i], peers: {}, ns, extra, deadAfterMs: opts.deadAfterMs }));
    await Promise.all(agents.map((a) => a.start()));
    for (const a of agents) await waitPeersUp(a, [1, 2, 3].filter((n) => n !== a.node), 20000);
  } else agents = await startCluster(t, ns, [1, 2, 3], { extra, deadAfterMs: opts.deadAfterMs });
  const clusters = await Promise.all([1, 2, 3].map((n) => connectCluster({ node: n, namespace: ns })));
  t.teardown(() => clusters.forEach((c) => c.close()));
  // Service logs (the agents write their service processes' output there) and images a killed agent left.
  t.teardown(() => {
    for (const [dir, prefix] of [[tmpdir(), `dvs-${ns}-`], ['/dev/shm', `dvs-mig.${ns}.`]])
      for (const f of existsSync(dir) ? readdirSync(dir) : []) if (f.startsWith(prefix)) rmSync(join(dir, f), { force: true });
  });
  const node = attach({ node: 1, namespace: ns });
  t.teardown(() => node.detach());
  const probe = node.bind(DC, 99);
  return { ns, agents, clusters, node, probe, pids: new ServicePids(t) };
}

/** `dvs serve` of the mig-kv fixture on (DC, ep) at `node`; resolves once it serves and every agent knows it. */
export async function startService(t: T, mc: MigCluster, node: number, ep = SERVICE_EP, dc = DC): Promise<Child> {
  const c = spawnCli(t, 'serve', ['serve', SERVICE, '--dc', String(dc), '--ep', String(ep), '--node', String(node), '--namespace', mc.ns, '--json']);
  mc.pids.add(c.pid);
  for (;;) {
    const l = JSON.parse(await c.line(20000)) as { event?: string };
    if (l.event === 'serving') break;
  }
  await Promise.all(mc.clusters.map((cl) => cl.waitForBind(dc, ep, { timeoutMs: 10000 })));
  // The service registers with its agent right after its bind: wait until it is migratable.
  const deadline = Date.now() + 10000;
  while (!(await mc.agents[node - 1].request<MigrationsList>('migrations')).services.some((s) => s.dc === dc && s.ep === ep)) {
    if (Date.now() > deadline) throw new Error(`the service on node ${node} did not register with its agent`);
    await sleep(20);
  }
  return c;
}

/** A call to the service from the test's probe endpoint (JSON both ways). */
export async function ask<R = Record<string, unknown>>(mc: MigCluster, msg: object, ep = SERVICE_EP, timeoutMs = 30000): Promise<R> {
  const m = await mc.probe.call(ep, JSON.stringify(msg), { timeoutMs });
  const v = JSON.parse(m.text()) as R;
  m.release();
  return v;
}

/** Client processes: `counts[i]` clients on node i+1 (endpoints from 21 on), `pipeline` puts per call. */
export async function startClients(t: T, mc: MigCluster, counts: number[], pipeline = 3, ep = SERVICE_EP): Promise<Child[]> {
  let first = 21;
  const out: Child[] = [];
  for (let i = 0; i < counts.length; i++) {
    if (!counts[i]) continue;
    const c = spawnFixture(t, 'mig-client', [mc.ns, i + 1, DC, ep, first, counts[i], pipeline]);
    first += counts[i];
    out.push(c);
  }
  for (const c of out) await c.expect('ready', 20000);
  return out;
}

/** Stops the clients and gathers their reports. */
export async function stopClients(cs: Child[]): Promise<ClientsReport[]> {
  for (const c of cs) c.send('stop');
  const out: ClientsReport[] = [];
  for (const c of cs) {
    for (;;) {
      const l = JSON.parse(await c.line(90000)) as ClientsReport & { window?: unknown };
      if (l.clients) {
        out.push(l);
        break;
      }
    }
    await c.exit(20000);
  }
  return out;
}

/** Asserts the clients' reports: nothing failed, lost, duplicated or reordered, every reply right. */
export function checkClients(t: Test, reports: ClientsReport[], what: string): { calls: number; sent: number } {
  let calls = 0;
  let sent = 0;
  const bad: string[] = [];
  for (const r of reports)
    for (const c of r.clients) {
      calls += c.calls;
      sent += c.sent;
      const total = c.calls + c.sent;
      if (c.failed || c.badReplies || c.dup !== 0 || c.gap !== 0 || c.last !== total || c.n !== total)
        bad.push(`${c.c}: failed ${c.failed}, bad replies ${c.badReplies}, dup ${c.dup}, gap ${c.gap}, last ${c.last}/${total}, seen ${c.n}; ${c.errors.join(' | ')}`);
    }
  t.same(bad, [], `${what}: every client: 0 failed, 0 lost, 0 duplicated, 0 reordered, every reply right (${calls} calls, ${sent} one-way messages)`);
  t.ok(calls > 0 && reports.every((r) => r.clients.every((c) => c.calls > 0)), `${what}: every client made calls`);
  return { calls, sent };
}

/** Migrates through node `via`'s Cluster handle; the new pid is tracked for cleanup. */
export async function migrate(mc: MigCluster, via: number, to: number, extra: { quiesceTimeoutMs?: number; ep?: number } = {}): Promise<MigrationRecord> {
  const r = await mc.clusters[via - 1].migrate({ dc: DC, ep: extra.ep ?? SERVICE_EP, to, quiesceTimeoutMs: extra.quiesceTimeoutMs });
  mc.pids.add(r.pid);
  return r;
}

/** Where the directory of every node puts (DC, ep) — all must agree. */
export async function locations(mc: MigCluster, ep = SERVICE_EP): Promise<(number | null)[]> {
  return mc.clusters.map((c) => c.locate(DC, ep)?.node ?? null);
}

export function pct(a: number[], q: number): number {
  if (!a.length) return NaN;
  const s = [...a].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.floor(s.length * q))];
}
