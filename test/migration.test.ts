// migration.test.ts — transparent service migration (issue 5), end to end:
// three `dvs agent` child processes, the mig-kv service under `dvs serve`,
// 8 clients on all three nodes (3 + 3 + 2, in three processes) calling
// continuously and sending one-way messages with per-client sequence numbers
// while the service migrates round-robin MIGRATIONS times (through the
// Cluster API, asked of a different agent each time, and once through the
// CLI): no call fails, nothing is lost, duplicated or reordered (the service
// checks every client's sequence; replies carry it back), the state is
// intact after every hop (a canary key, the hop count, the clients'
// counters), the directory of every node follows, the old process exits.
import t from 'tap';
import { uniqueNs } from './helpers.js';
import { runCli } from './cluster-helpers.js';
import { etcdMissing, startEtcd } from './etcd-helpers.js';
import { ask, checkClients, DC, locations, migrate, pct, SERVICE_EP, startClients, startMigCluster, startService, stopClients } from './migration-helpers.js';

/** Round-robin migrations under load (the issue asks for 100: DVS_MIGRATIONS=100). */
const MIGRATIONS = Number(process.env.DVS_MIGRATIONS ?? 100);

t.test(`${MIGRATIONS} round-robin migrations under load: nothing lost, duplicated or reordered`, async (tt) => {
  const mc = await startMigCluster(tt, uniqueNs('mig'));
  const first = await startService(tt, mc, 1);
  tt.same(await ask(mc, { op: 'set', k: 'canary', v: 'tweety' }), { ok: true }, 'canary set');
  const clients = await startClients(tt, mc, [3, 3, 2]);
  const downtime: number[] = [];
  const total: number[] = [];
  const moved: number[] = [];
  const bad: string[] = [];
  let at = 1;
  const t0 = Date.now();
  for (let i = 1; i <= MIGRATIONS; i++) {
    const to = (at % 3) + 1;
    const via = ((i + 1) % 3) + 1;  // every agent in turn asks (the source's, the destination's, the third)
    // Every 5th migration the service is busy (a 1 s call, longer than the destination's start) when
    // the freeze comes: the clients' messages wait in its mailbox and move with it, in order, in the image.
    const busy = i % 5 === 0 ? ask(mc, { op: 'sleep', ms: 1000 }) : null;
    let r;
    if (i === 2) {
      // Once through the CLI (asked of node `via`'s agent), with its JSON output.
      const out = await runCli(tt, ['migrate', String(DC), String(SERVICE_EP), '--to', String(to), '--node', String(via), '--namespace', mc.ns, '--json'], 60000);
      tt.equal(out.code, 0, `dvs migrate exits 0 (${out.stderr.trim()})`);
      r = JSON.parse(out.stdout);
      mc.pids.add(r.pid);
    } else r = await migrate(mc, via, to);
    if (r.state !== 'committed' || r.from !== at || r.to !== to) bad.push(`#${i}: ${JSON.stringify(r)}`);
    downtime.push(r.downtimeMs);
    total.push(r.totalMs);
    moved.push(r.messages ?? 0);
    if (busy) {
      if (!((await busy) as { slept?: number }).slept) bad.push(`#${i}: the busy call was not answered`);
      if (!(r.messages > 0)) bad.push(`#${i}: a busy service moved no messages`);
    }
    at = to;
    // State intact, served by the new process, the hop counted once.
    const w = await ask<{ pid: number; hops: number }>(mc, { op: 'where' });
    const canary = await ask<{ v: string }>(mc, { op: 'get', k: 'canary' });
    if (w.pid !== r.pid || w.hops !== i || canary.v !== 'tweety') bad.push(`#${i}: served by ${w.pid} (migration said ${r.pid}), hops ${w.hops}, canary ${canary.v}`);
    if (i === 1) {
      const e = await first.exit(10000);
      tt.equal(e.code, 0, 'the original process exits 0 once detached');
    }
  }
  const secs = (Date.now() - t0) / 1000;
  tt.same(bad, [], `${MIGRATIONS} migrations committed, each to the right node, state intact and served by the new process after every hop`);
  // Every node's directory ends up naming the last destination.
  const deadline = Date.now() + 10000;
  let where = await locations(mc);
  while (where.some((n) => n !== at) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    where = await locations(mc);
  }
  tt.same(where, [at, at, at], `every node's directory names node ${at}`);
  const reports = await stopClients(clients);
  const { calls, sent } = checkClients(tt, reports, `${MIGRATIONS} migrations`);
  const lat = reports.map((r) => r.lat);
  // The busy migrations' freeze includes the end of the 1 s call: reported apart.
  const idle = (a: number[]): number[] => a.filter((_, k) => (k + 1) % 5 !== 0);
  const busyOnes = (a: number[]): number[] => a.filter((_, k) => (k + 1) % 5 === 0);
  tt.comment(
    `${MIGRATIONS} migrations in ${secs.toFixed(1)} s: downtime p50 ${pct(idle(downtime), 0.5).toFixed(2)} ms, p99 ${pct(idle(downtime), 0.99).toFixed(2)} ms, max ${pct(idle(downtime), 1).toFixed(2)} ms; ` +
      `total p50 ${pct(idle(total), 0.5).toFixed(2)} ms, p99 ${pct(idle(total), 0.99).toFixed(2)} ms; with the service busy in a 1 s call (every 5th): downtime p50 ${pct(busyOnes(downtime), 0.5).toFixed(0)} ms, ` +
      `messages moved ${busyOnes(moved).join(',')} (others: max ${pct(idle(moved), 1)}); ` +
      `${calls} calls and ${sent} one-way messages by 8 clients; client call latency p50 ${lat.map((l) => l.p50.toFixed(2)).join('/')} ms, p99 ${lat.map((l) => l.p99.toFixed(1)).join('/')} ms, max ${lat.map((l) => l.max.toFixed(1)).join('/')} ms (per client process)`,
  );
});

t.test('with the directory in etcd: migrations under load, the directory follows', { skip: etcdMissing() }, async (tt) => {
  // etcd writes the destination's key only once the source's is gone: the commit must not wait for it.
  const etcd = await startEtcd(tt);
  const mc = await startMigCluster(tt, uniqueNs('migetcd'), { registry: etcd.url });
  await startService(tt, mc, 1);
  await ask(mc, { op: 'set', k: 'canary', v: 'etcd' });
  const clients = await startClients(tt, mc, [1, 1, 1]);
  const bad: string[] = [];
  let at = 1;
  for (let i = 1; i <= 6; i++) {
    const to = (at % 3) + 1;
    const r = await migrate(mc, ((i + 1) % 3) + 1, to);
    const w = await ask<{ pid: number; hops: number }>(mc, { op: 'where' });
    if (r.state !== 'committed' || r.to !== to || w.pid !== r.pid || w.hops !== i) bad.push(`#${i}: ${JSON.stringify(r)} served by ${JSON.stringify(w)}`);
    at = to;
  }
  tt.same(bad, [], '6 migrations committed, served by the new process each time, state intact');
  const deadline = Date.now() + 15000;
  let where = await locations(mc);
  while (where.some((n) => n !== at) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    where = await locations(mc);
  }
  tt.same(where, [at, at, at], `every node's directory (from etcd) names node ${at}`);
  checkClients(tt, await stopClients(clients), 'etcd directory');
});
