// membership-embedded.test.ts — what is specific to embedded membership: the
// --seeds flags, static mode (view 0), and the in-process API (views and the
// 'view' event). The cluster scenarios (five agents from one seed, leave,
// kill -9, partition, rejoin, names, DCs) run for both backends in
// membership-backends.test.ts.
import t from 'tap';
import { startAgent, type View } from '../lib/index.js';
import { silentLogger } from '../lib/agent/log.js';
import type { NodesResult } from '../lib/agent/agent.js';
import { sleep, uniqueNs } from './helpers.js';
import { AgentProc, freeUdpPorts, runCli } from './cluster-helpers.js';

async function nodesOf(a: AgentProc): Promise<NodesResult> {
  return a.request<NodesResult>('nodes');
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
