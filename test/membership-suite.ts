// membership-suite.ts — one suite of cluster-membership and directory
// scenarios, run unchanged against each registry backend (embedded: the
// agents themselves; etcd: a real etcd) by membership-backends.test.ts. Real
// `dvs agent` child processes on 127.0.0.1:
//   five agents form a cluster from one seed (or one etcd) → every agent sees
//   all five alive, a call crosses between two non-seed nodes;
//   names and waitForBind (before and after the bind, and a timeout);
//   DC membership enforcement through `dvs dc` (EDVSNODCNODE, add-node);
//   a partition between two nodes (fault injector) → calls across it fail
//   with EDVSNOTCONN, and after the heal they work again;
//   graceful leave → 'left' in a new view;
//   kill -9 → 'dead' within the detection time on every survivor, its
//   endpoints leave the directory and waiting callers get EDVSNOTCONN;
//   restart with the same id → alive again with a new incarnation.
// Not a test file itself (no .test.ts).
import { attach, connectCluster, type Cluster } from '../lib/index.js';
import type { NodesResult } from '../lib/agent/agent.js';
import type { Test } from 'tap';
import { codeOf as codeOfP, sleep, spawnFixture, uniqueNs, within } from './helpers.js';
import { AgentProc, freeUdpPorts, runCli, waitRemote } from './cluster-helpers.js';

const DC = 1;
const IDS = [1, 2, 3, 4, 5];

export interface Backend {
  name: 'embedded' | 'etcd';
  /** Extra `dvs agent` arguments for node `node` (seed: the first agent's UDP port). */
  agentArgs(node: number, seedPort: number): string[];
  /** Failure detection the backend promises by default (ms), and the bound the test allows on a loaded machine. */
  detectMs: number;
  detectBoundMs: number;
  /** Whether a partition also changes the membership view (embedded: each side sees the other dead; etcd: liveness is the lease). */
  partitionChangesView: boolean;
}

const codeOf = (e: unknown): string => (typeof e === 'string' ? e : ((e as { code?: string }).code ?? String(e)));
const stateOf = (r: NodesResult, node: number): string | undefined => r.members.find((m) => m.node === node)?.state;

async function nodesOf(a: AgentProc): Promise<NodesResult> {
  return a.request<NodesResult>('nodes');
}

/** Polls `nodes` on every agent until `ok` holds for all; returns their last answers. */
async function waitViews(agents: AgentProc[], ok: (r: NodesResult) => boolean, ms: number, what: string): Promise<NodesResult[]> {
  const deadline = Date.now() + ms;
  let last: NodesResult[] = [];
  for (;;) {
    last = await Promise.all(agents.map((a) => nodesOf(a).catch(() => null as unknown as NodesResult)));
    if (last.every((r) => r && ok(r))) return last;
    if (Date.now() > deadline)
      throw new Error(`${what}: not reached within ${ms} ms: ${JSON.stringify(last.map((r) => r && { node: r.node, view: r.view, members: r.members.map((m) => `${m.node}:${m.state}`) }))}`);
    await sleep(10);
  }
}

/** A call that must succeed, retried while the directory or the links settle. */
async function callUntil(f: () => Promise<{ payload: Uint8Array; release(): void }>, ms: number, what: string): Promise<number[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const r = await f();
      const v = [...r.payload];
      r.release();
      return v;
    } catch (e) {
      const c = codeOf(e);
      if (!['EDVSNOTBIND', 'EDVSNOTCONN', 'EDVSTIMEDOUT', 'EDVSDSTDIED'].includes(c) || Date.now() > deadline) throw new Error(`${what}: ${c}`);
      await sleep(50);
    }
  }
}

export async function membershipSuite(tt: Test, b: Backend): Promise<void> {
  const ns = uniqueNs(`suite-${b.name}`);
  const ports = await freeUdpPorts(IDS.length);
  const agents = IDS.map((n, i) => new AgentProc(tt, { node: n, port: ports[i], peers: {}, ns, extra: b.agentArgs(n, ports[0]) }));
  const byId = (n: number): AgentProc => agents[IDS.indexOf(n)];
  const clusters: Cluster[] = [];
  tt.teardown(() => {
    for (const c of clusters) c.close();
  });

  // ---- five agents form a cluster
  await byId(1).start();
  await Promise.all(agents.slice(1).map((a) => a.start()));
  const formed = await waitViews(agents, (r) => IDS.every((n) => stateOf(r, n) === 'alive'), 20000, 'all five alive everywhere');
  tt.ok(formed.every((r) => r.members.length === 5), `[${b.name}] every agent lists 5 members, all alive`);
  const inc0 = new Map(formed[0].members.map((m) => [m.node, m.incarnation]));
  tt.ok(formed.every((r) => r.members.every((m) => m.incarnation === inc0.get(m.node))), `[${b.name}] they agree on incarnations`);

  // ---- names and waitForBind: node 4 waits for a name that node 5 binds later
  const c4 = await connectCluster({ node: 4, namespace: ns });
  clusters.push(c4);
  tt.equal(c4.lookup(DC, 'echo'), null, `[${b.name}] lookup of a name nobody bound: null`);
  tt.equal(await codeOfP(c4.waitForBind(DC, 'echo', { timeoutMs: 200 })), 'EDVSTIMEDOUT', `[${b.name}] waitForBind times out with EDVSTIMEDOUT`);
  const waiting = c4.waitForBind(DC, 'echo', { timeoutMs: 20000 });
  const srv5 = spawnFixture(tt, 'server', [ns, 5, DC, 7, 'echo', 'echo']);
  tt.equal(await within(srv5.line(), 30000, 'server on node 5 ready'), 'ready');
  const found = await within(waiting, 25000, 'waitForBind');
  tt.same([found.dc, found.ep, found.node, found.name], [DC, 7, 5, 'echo'], `[${b.name}] waitForBind resolves with (dc 1, ep 7, node 5) once it is bound`);
  tt.same(c4.lookup(DC, 'echo') && [c4.lookup(DC, 'echo')!.ep, c4.lookup(DC, 'echo')!.node], [7, 5], `[${b.name}] lookup finds it from the cache`);
  const now = await c4.waitForBind(DC, 7, { timeoutMs: 0 });
  tt.equal(now.node, 5, `[${b.name}] waitForBind of a bound endpoint number resolves at once`);
  await waitRemote(byId(4), DC, 7);
  const n4 = attach({ node: 4, namespace: ns });
  tt.teardown(() => n4.detach());
  const me4 = n4.bind(DC, 8);
  tt.same(await callUntil(() => me4.call(found.ep, Uint8Array.from([41]), { timeoutMs: 5000 }), 15000, 'call 4 → 5'), [42], `[${b.name}] node 4 calls the server it looked up on node 5 (neither is the first node)`);

  // ---- DC enforcement: DC 5 spans nodes 1 and 2 only
  const created = await runCli(tt, ['dc', 'create', '5', '--nodes', '1,2', '--node', '1', '--namespace', ns, '--json']);
  tt.equal(created.code, 0, `[${b.name}] dvs dc create 5 --nodes 1,2 exits 0 (${created.stderr.trim()})`);
  const n3 = attach({ node: 3, namespace: ns });
  tt.teardown(() => n3.detach());
  // (The table reaches node 3 shortly after the CLI returns: until then the DC is open there.)
  const deadlineDc = Date.now() + 10000;
  let refused = '';
  while (Date.now() < deadlineDc) {
    try {
      n3.bind(5, 100).close();
      refused = 'bound';
    } catch (e) {
      refused = codeOf(e);
      if (refused === 'EDVSNODCNODE') break;
    }
    await sleep(20);
  }
  tt.equal(refused, 'EDVSNODCNODE', `[${b.name}] a bind in DC 5 on node 3 (not in the DC) fails with EDVSNODCNODE`);
  const added = await runCli(tt, ['dc', 'add-node', '5', '3', '--node', '2', '--namespace', ns, '--json']);
  tt.equal(added.code, 0, `[${b.name}] dvs dc add-node 5 3 (asked of node 2) exits 0`);
  let bound = '';
  const deadlineAdd = Date.now() + 10000;
  while (Date.now() < deadlineAdd) {
    try {
      n3.bind(5, 100).close();
      bound = 'ok';
      break;
    } catch (e) {
      bound = codeOf(e);
    }
    await sleep(20);
  }
  tt.equal(bound, 'ok', `[${b.name}] after add-node the bind on node 3 succeeds`);
  const listed = await runCli(tt, ['dc', 'list', '--node', '4', '--namespace', ns, '--json']);
  tt.match(listed.stdout, /"dc":\s*5/, `[${b.name}] dvs dc list on node 4 shows DC 5`);

  // ---- partition between nodes 2 and 5: calls across it fail, then work after the heal
  await byId(2).request('fault', { partition: [5] });
  await byId(5).request('fault', { partition: [2] });
  const n2 = attach({ node: 2, namespace: ns });
  tt.teardown(() => n2.detach());
  const me2 = n2.bind(DC, 9);
  const deadlineP = Date.now() + b.detectBoundMs + 5000;
  let pcode = '';
  while (Date.now() < deadlineP) {
    pcode = await codeOfP(me2.call(7, Uint8Array.from([1]), { timeoutMs: 3000 }), 10000);
    if (pcode === 'EDVSNOTCONN' || pcode === 'EDVSNOTBIND') break;
  }
  tt.ok(pcode === 'EDVSNOTCONN' || pcode === 'EDVSNOTBIND', `[${b.name}] during the partition a call from node 2 to node 5 fails (${pcode})`);
  if (b.partitionChangesView) {
    await waitViews([byId(2)], (r) => stateOf(r, 5) === 'dead', b.detectBoundMs + 5000, 'node 2 sees node 5 dead');
    tt.pass(`[${b.name}] node 2 sees node 5 dead during the partition`);
  }
  const third = await waitViews([byId(1), byId(3)], (r) => stateOf(r, 5) === 'alive' && stateOf(r, 2) === 'alive', 5000, 'nodes 1 and 3 unaffected');
  tt.ok(third.length === 2, `[${b.name}] nodes outside the partition still see nodes 2 and 5 alive`);
  await byId(2).request('fault', { partition: [] });
  await byId(5).request('fault', { partition: [] });
  tt.same(await callUntil(() => me2.call(7, Uint8Array.from([9]), { timeoutMs: 3000 }), 20000, 'call 2 → 5 after the heal'), [10], `[${b.name}] after the heal node 2 calls node 5 again`);
  await waitViews(agents, (r) => IDS.every((n) => stateOf(r, n) === 'alive'), 20000, 'all alive after the heal');
  tt.pass(`[${b.name}] after the heal every agent sees all five alive`);
  n2.detach();

  // Stop the echo server (it answers "quit").
  await me4.call(7, 'quit', { timeoutMs: 10000 }).then((r) => r.release(), () => {});
  await srv5.exit(10000).catch(() => {});
  n4.detach();

  // ---- graceful leave: SIGTERM node 5
  const others5 = agents.filter((a) => a.node !== 5);
  const before = await Promise.all(others5.map(nodesOf));
  const tLeave = Date.now();
  byId(5).child.kill('SIGTERM');
  const left = await waitViews(others5, (x) => stateOf(x, 5) === 'left', 10000, 'node 5 left');
  const leaveMs = Date.now() - tLeave;
  tt.ok(left.every((x, i) => x.view > before[i].view), `[${b.name}] every other agent shows node 5 'left' after ${leaveMs} ms, in a higher view`);
  tt.same(await byId(5).child.exit(10000), { code: 0, signal: null }, `[${b.name}] the leaving agent exits 0`);

  // ---- kill -9 of node 3 with calls waiting on its endpoint
  const srv3 = spawnFixture(tt, 'cluster-server', [ns, 3, DC, 20, 2]);
  tt.equal(await within(srv3.line(), 30000, 'server on node 3 ready'), 'ready');
  await waitRemote(byId(2), DC, 20);
  const n2b = attach({ node: 2, namespace: ns });
  tt.teardown(() => n2b.detach());
  const me = n2b.bind(DC, 40);
  const calls = [0, 1].map((i) => me.call(20, `q${i}`).then(() => 'resolved', (e: unknown) => e));
  for (let i = 1; i <= 2; i++) tt.same(await within(srv3.json(), 10000, 'the server got a call'), { held: i });
  const survivors = agents.filter((a) => a.node !== 3 && a.node !== 5);
  const beforeKill = await Promise.all(survivors.map(nodesOf));
  const tKill = Date.now();
  byId(3).child.kill('SIGKILL');
  const callsDone = Promise.all(calls).then((x) => ({ x, ms: Date.now() - tKill }));
  const dead = await waitViews(survivors, (x) => stateOf(x, 3) === 'dead', b.detectBoundMs + 2000, 'node 3 dead');
  const detectMs = Date.now() - tKill;
  tt.ok(detectMs <= b.detectBoundMs, `[${b.name}] every survivor shows node 3 'dead' ${detectMs} ms after kill -9 (default detection ${b.detectMs} ms; bound ${b.detectBoundMs})`);
  tt.ok(dead.every((x, i) => x.view > beforeKill[i].view), `[${b.name}] in a new view on every survivor`);
  const gone = await waitViews(survivors, (x) => x.members.find((m) => m.node === 3)?.endpoints === 0, 5000, "node 3's endpoints gone");
  tt.ok(gone.length === survivors.length, `[${b.name}] node 3's endpoints left the directory`);
  const done = await within(callsDone, b.detectBoundMs + 2000, 'the waiting calls to fail');
  tt.same(done.x.map(codeOf), ['EDVSNOTCONN', 'EDVSNOTCONN'], `[${b.name}] the calls waiting on node 3 failed with EDVSNOTCONN after ${done.ms} ms`);
  tt.equal((await byId(3).child.exit(10000)).signal, 'SIGKILL');
  n2b.detach();
  srv3.kill('SIGKILL');
  await srv3.exit(10000);

  // ---- restart node 3 (same id, same port): alive again with a new incarnation
  const oldInc = inc0.get(3)!;
  const a3 = await new AgentProc(tt, byId(3).opts).start();
  const back = await waitViews([...survivors, a3], (x) => [1, 2, 3, 4].every((n) => stateOf(x, n) === 'alive') && (x.members.find((m) => m.node === 3)?.incarnation ?? 0) > oldInc, 15000, 'node 3 alive again');
  const newInc = back[0].members.find((m) => m.node === 3)!.incarnation;
  tt.ok(back.every((x) => x.members.find((m) => m.node === 3)!.incarnation === newInc), `[${b.name}] node 3 is alive everywhere with a new incarnation (${oldInc} → ${newInc})`);

  for (const c of clusters.splice(0)) c.close();
  await Promise.all([...survivors, a3].map((a) => a.stop()));
}
