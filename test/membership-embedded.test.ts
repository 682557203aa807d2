// membership-embedded.test.ts — embedded membership with real `dvs agent`
// processes: five agents form a cluster from one seed (each knows only
// `--seeds 1=...`), every agent sees every member alive and the full mesh
// carries a call between two non-seed nodes; a graceful leave (SIGTERM) is
// seen as 'left' at once; a kill -9 is seen as 'dead' within the detection
// time (transport dead-after 1000 ms + suspect 500 ms by default) and calls
// waiting on its endpoints fail with EDVSNOTCONN; the killed agent restarted
// with the same id and port rejoins with a new incarnation.
import t from 'tap';
import { attach, startAgent, type View } from '../lib/index.js';
import { silentLogger } from '../lib/agent/log.js';
import type { NodesResult } from '../lib/agent/agent.js';
import { sleep, spawnFixture, uniqueNs, within } from './helpers.js';
import { AgentProc, freeUdpPorts, runCli, waitRemote } from './cluster-helpers.js';

const DC = 1;
const IDS = [1, 2, 3, 4, 5];
/** Default detection is 1.5 s; allow for process scheduling on a loaded machine. */
const DETECT_BOUND_MS = 4000;

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

const codeOf = (e: unknown): string => (typeof e === 'string' ? e : ((e as { code?: string }).code ?? String(e)));
const stateOf = (r: NodesResult, node: number): string | undefined => r.members.find((m) => m.node === node)?.state;

t.test('embedded membership: join from one seed, leave, kill -9, rejoin', async (tt) => {
  const ns = uniqueNs('mem-emb');
  const ports = await freeUdpPorts(IDS.length);
  const seed = `1=127.0.0.1:${ports[0]}`;
  const agents = IDS.map((n, i) => new AgentProc(tt, { node: n, port: ports[i], peers: {}, ns, extra: ['--seeds', seed] }));
  const byId = (n: number): AgentProc => agents[IDS.indexOf(n)];

  // ---- five agents form a cluster from one seed
  await byId(1).start();
  await Promise.all(agents.slice(1).map((a) => a.start()));
  const formed = await waitViews(agents, (r) => r.mode === 'embedded' && IDS.every((n) => stateOf(r, n) === 'alive'), 15000, 'all five alive everywhere');
  tt.ok(formed.every((r) => r.members.length === 5), 'every agent lists 5 members, all alive');
  const inc0 = new Map(formed[0].members.map((m) => [m.node, m.incarnation]));
  tt.ok(formed.every((r) => r.members.every((m) => m.incarnation === inc0.get(m.node) && m.address === `127.0.0.1:${ports[IDS.indexOf(m.node)]}`)), 'they agree on addresses and incarnations');

  // The CLI shows the same.
  const cli = await runCli(tt, ['nodes', '--node', '4', '--namespace', ns, '--json']);
  tt.equal(cli.code, 0, 'dvs nodes --json exits 0');
  const parsed = JSON.parse(cli.stdout) as NodesResult;
  tt.same(parsed.members.map((m) => [m.node, m.state]), IDS.map((n) => [n, 'alive']), 'dvs nodes --json lists the five members alive');
  const text = await runCli(tt, ['nodes', '--node', '2', '--namespace', ns]);
  tt.match(text.stdout, /embedded membership, view \d+/, 'dvs nodes prints the view number');
  tt.match(text.stdout, /^5\s+127\.0\.0\.1:\d+\s+alive\s+\d+\s+0$/m, 'and a row per member');

  // ---- a call between two non-seed nodes (4 → 5): full mesh + directory
  const srv5 = spawnFixture(tt, 'server', [ns, 5, DC, 7, 'echo']);
  tt.equal(await within(srv5.line(), 30000, 'server on node 5 ready'), 'ready');
  await waitRemote(byId(4), DC, 7);
  const n4 = attach({ node: 4, namespace: ns });
  tt.teardown(() => n4.detach());
  const r = await n4.bind(DC, 8).call(7, Uint8Array.from([41]), { timeoutMs: 10000 });
  tt.same([...r.payload], [42], 'node 4 calls a server on node 5 (neither is the seed)');
  r.release();
  const withEp = await waitViews([byId(4)], (x) => x.members.find((m) => m.node === 5)?.endpoints === 1, 5000, 'node 5 endpoint count');
  tt.equal(withEp[0].members.find((m) => m.node === 5)?.endpoints, 1, 'dvs nodes counts node 5\'s endpoint');
  n4.detach();
  (await n4Quit(ns)).release();
  await srv5.exit(10000);

  // ---- graceful leave: SIGTERM node 5
  const others5 = agents.filter((a) => a.node !== 5);
  const before = await Promise.all(others5.map(nodesOf));
  const tLeave = Date.now();
  byId(5).child.kill('SIGTERM');
  const left = await waitViews(others5, (x) => stateOf(x, 5) === 'left', 5000, 'node 5 left');
  const leaveMs = Date.now() - tLeave;
  tt.ok(leaveMs < 1000, `every other agent shows node 5 'left' after ${leaveMs} ms (< 1000)`);
  tt.ok(left.every((x, i) => x.view > before[i].view), `with a higher view number (${before.map((b) => b.view)} → ${left.map((x) => x.view)})`);
  tt.same(await byId(5).child.exit(10000), { code: 0, signal: null }, 'the leaving agent exits 0');

  // ---- kill -9 of node 3 with calls waiting on its endpoint
  const srv3 = spawnFixture(tt, 'cluster-server', [ns, 3, DC, 20, 2]);
  tt.equal(await within(srv3.line(), 30000, 'server on node 3 ready'), 'ready');
  await waitRemote(byId(2), DC, 20);
  const n2 = attach({ node: 2, namespace: ns });
  tt.teardown(() => n2.detach());
  const me = n2.bind(DC, 40);
  const calls = [0, 1].map((i) => me.call(20, `q${i}`).then(() => 'resolved', (e: unknown) => e));
  for (let i = 1; i <= 2; i++) tt.same(await within(srv3.json(), 10000, 'the server got a call'), { held: i });
  const survivors = agents.filter((a) => a.node !== 3 && a.node !== 5);
  const beforeKill = await Promise.all(survivors.map(nodesOf));
  const tKill = Date.now();
  byId(3).child.kill('SIGKILL');
  const callsDone = Promise.all(calls).then((x) => ({ x, ms: Date.now() - tKill }));
  const dead = await waitViews(survivors, (x) => stateOf(x, 3) === 'dead', DETECT_BOUND_MS + 2000, 'node 3 dead');
  const detectMs = Date.now() - tKill;
  tt.ok(detectMs <= DETECT_BOUND_MS, `every survivor shows node 3 'dead' ${detectMs} ms after kill -9 (default detection 1500 ms; bound ${DETECT_BOUND_MS})`);
  tt.ok(dead.every((x, i) => x.view > beforeKill[i].view), 'in a new view on every survivor');
  tt.ok(dead.every((x) => x.members.find((m) => m.node === 3)?.endpoints === 0), "node 3's endpoints left the directory");
  const done = await within(callsDone, DETECT_BOUND_MS, 'the waiting calls to fail');
  tt.same(done.x.map(codeOf), ['EDVSNOTCONN', 'EDVSNOTCONN'], `the calls waiting on node 3 failed with EDVSNOTCONN after ${done.ms} ms`);
  tt.ok(done.ms <= DETECT_BOUND_MS, 'within the detection time');
  tt.equal((await byId(3).child.exit(10000)).signal, 'SIGKILL');
  n2.detach();
  srv3.kill('SIGKILL');
  await srv3.exit(10000);

  // ---- restart node 3 (same id, same port): it rejoins with a new incarnation
  const oldInc = inc0.get(3)!;
  const beforeRejoin = await Promise.all(survivors.map(nodesOf));
  const a3 = await new AgentProc(tt, byId(3).opts).start();
  const back = await waitViews([...survivors, a3], (x) => [1, 2, 3, 4].every((n) => stateOf(x, n) === 'alive') && (x.members.find((m) => m.node === 3)?.incarnation ?? 0) > oldInc, 10000, 'node 3 alive again');
  const newInc = back[0].members.find((m) => m.node === 3)!.incarnation;
  tt.ok(back.every((x) => x.members.find((m) => m.node === 3)!.incarnation === newInc), `node 3 is alive everywhere with a new incarnation (${oldInc} → ${newInc})`);
  tt.ok(back.slice(0, survivors.length).every((x, i) => x.view > beforeRejoin[i].view), 'in a new view on every survivor');
  // A member that left before this node joined is not learned (tables carry 'left' only for known members).
  tt.not(stateOf(back[back.length - 1], 5), 'alive', 'the rejoined node does not take node 5 for alive');
  tt.equal(stateOf(back[0], 5), 'left', 'node 5 is still shown as left');

  await Promise.all([...survivors, a3].map((a) => a.stop()));
});

/** Asks the echo server on node 5 to quit (from node 4). */
async function n4Quit(ns: string): Promise<{ release(): void }> {
  const n = attach({ node: 4, namespace: ns });
  try {
    return await n.bind(DC, 9).call(7, 'quit', { timeoutMs: 10000 });
  } finally {
    n.detach();
  }
}

t.test('--seeds is validated; without it, nodes reports the static peers (view 0)', async (tt) => {
  const ns = uniqueNs('mem-flags');
  const [p1, p2] = await freeUdpPorts(2);
  const bad = await runCli(tt, ['agent', '--node', '1', '--listen', `127.0.0.1:${p1}`, '--namespace', ns, '--seeds', `2:127.0.0.1:${p2}`]);
  tt.equal(bad.code, 1, 'a malformed seed: exit 1');
  tt.match(bad.stderr, /--seeds entries are <node>=<ipv4>:<port>/, 'and a clear message');
  const badMs = await runCli(tt, ['agent', '--node', '1', '--listen', `127.0.0.1:${p1}`, '--namespace', ns, '--seeds', `1=127.0.0.1:${p1}`, '--suspect-ms', 'soon']);
  tt.equal(badMs.code, 1, 'a bad --suspect-ms: exit 1');
  tt.match(badMs.stderr, /--suspect-ms must be an integer/);
  const a1 = await new AgentProc(tt, { node: 1, port: p1, peers: { 2: p2 }, ns }).start();
  const r = await nodesOf(a1);
  tt.equal(r.mode, 'static', 'static peers only: no embedded membership');
  tt.equal(r.view, 0, 'view 0');
  tt.same(r.members.map((m) => [m.node, m.state]), [[1, 'alive'], [2, 'suspect']], 'itself alive, the unreachable static peer suspect');
  await a1.stop();
});

t.test('API: agent.membership.view() and the view event (embedded agents in this process)', async (tt) => {
  const ns = uniqueNs('mem-api');
  const a1 = await startAgent({ node: 1, listen: { host: '127.0.0.1', port: 0 }, peers: [], seeds: [], namespace: ns }, silentLogger);
  tt.teardown(() => a1.stop());
  const views: View[] = [];
  a1.membership!.on('view', (v) => views.push(v));
  tt.same(a1.membership!.view().members.map((m) => [m.node, m.state]), [[1, 'alive']], 'a node without seeds forms a cluster of one');
  const a2 = await startAgent({ node: 2, listen: { host: '127.0.0.1', port: 0 }, peers: [], seeds: [{ node: 1, host: '127.0.0.1', port: a1.port }], namespace: ns }, silentLogger);
  tt.teardown(() => a2.stop());
  const deadline = Date.now() + 10000;
  while (!views.some((v) => v.members.length === 2) && Date.now() < deadline) await sleep(10);
  const joined = views.find((v) => v.members.length === 2);
  tt.same(joined?.members.map((m) => [m.node, m.state, m.incarnation]), [[1, 'alive', a1.incarnation], [2, 'alive', a2.incarnation]], "a 'view' event shows node 2 joined");
  // (A leave is told over the links that are up: one before the link is up is seen as a failure.)
  await a2.waitForPeers([1]);
  await a2.stop();
  while (!views.some((v) => v.members.find((m) => m.node === 2)?.state === 'left') && Date.now() < deadline) await sleep(10);
  const last = views[views.length - 1];
  tt.equal(last.members.find((m) => m.node === 2)?.state, 'left', "then one with node 2 'left'");
  tt.ok(views.every((v, i) => i === 0 || v.number === views[i - 1].number + 1), `view numbers increase by one (${views.map((v) => v.number)})`);
  tt.same(a1.membership!.view(), last, 'view() is the last view emitted');
});
