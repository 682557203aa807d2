// cluster-names.test.ts — endpoint names, lookup and waitForBind across real
// `dvs agent` processes (embedded membership from one seed), through the
// Cluster client of each agent's control socket (connectCluster) and the CLI:
// waitForBind before the bind resolves when a server on another node binds the
// name; lookup/locate agree on every node and `dvs lookup --json` prints the
// same; a call to the looked-up endpoint works; an unbind leaves every cache;
// a timeout is EDVSTIMEDOUT; cluster-wide `dvs ps --json` lists every node's
// endpoints with names, and a node that cannot answer (its agent stopped with
// SIGSTOP) is reported as not answered; the handle follows views and reports
// the loss of its agent. Then the API's argument checks on in-process agents.
import t from 'tap';
import { attach, connectCluster, startAgent, type Agent, type Cluster, type ClusterEntry, type PsResult, type View } from '../lib/index.js';
import { silentLogger } from '../lib/agent/log.js';
import { codeOf, shmFiles, sleep, spawnFixture, uniqueNs, within } from './helpers.js';
import { freeUdpPorts, pollUntil, runCli, startSeeded } from './cluster-helpers.js';

const DC = 3;

t.test('names, lookup and waitForBind across agents; cluster-wide ps', async (tt) => {
  const ns = uniqueNs('names');
  const agents = await startSeeded(tt, ns, [1, 2, 3]);
  const [a1, a2, a3] = agents;
  const clusters: Cluster[] = [];
  tt.teardown(() => clusters.forEach((c) => c.close()));
  for (const a of agents) clusters.push(await connectCluster({ node: a.node, namespace: ns }));
  const [c1, c2, c3] = clusters;
  tt.equal(c1.node, 1, 'a handle knows its node');
  tt.same(c1.view().members.map((m) => [m.node, m.state]), [[1, 'alive'], [2, 'alive'], [3, 'alive']], 'the snapshot carries the view');
  tt.same(c1.nodes().map((m) => m.endpoints), [0, 0, 0], 'nodes() with endpoint counts');

  // ---- waitForBind before the bind: node 1 waits for a name bound later on node 3
  tt.equal(c1.lookup(DC, 'svc'), null, 'lookup before the bind: null');
  const waited = c1.waitForBind(DC, 'svc', { timeoutMs: 20000 });
  const waitedEp = c2.waitForBind(DC, 70, { timeoutMs: 20000 });
  let early = false;
  void waited.then(() => (early = true), () => {});
  await sleep(200);
  tt.notOk(early, 'waitForBind has not resolved before the bind');
  const srv = spawnFixture(tt, 'server', [ns, 3, DC, 70, 'echo', 'svc']);
  tt.equal(await within(srv.line(), 30000, 'named server ready'), 'ready');
  const e1 = await waited;
  tt.same(e1, { dc: DC, ep: 70, node: 3, gen: e1.gen, pid: srv.pid, name: 'svc' }, 'waitForBind(dc, name) resolves with where the name was bound');
  tt.same(await waitedEp, e1, 'waitForBind(dc, ep) on another node resolves with the same entry');
  tt.same(c1.lookup(DC, 'svc'), e1, 'lookup on node 1');
  tt.same(c1.locate(DC, 70), e1, 'locate on node 1');
  tt.same(await pollUntil(() => c3.lookup(DC, 'svc') ?? undefined, 10000, 'node 3 lookup'), e1, "lookup on node 3 (the server's own node)");
  tt.same(await c2.waitForBind(DC, 'svc', { timeoutMs: 0 }), e1, 'waitForBind on a bound name resolves at once (timeoutMs 0)');
  tt.equal(c1.lookup(DC + 1, 'svc'), null, 'names are per DC');
  tt.same(c1.nodes().map((m) => m.endpoints), [0, 0, 1], 'nodes() counts the endpoint on node 3');

  const cli = await runCli(tt, ['lookup', String(DC), 'svc', '--node', '2', '--namespace', ns, '--json']);
  tt.equal(cli.code, 0, 'dvs lookup --json exits 0');
  tt.same(JSON.parse(cli.stdout), e1, 'and prints the same entry');
  const cliText = await runCli(tt, ['lookup', String(DC), 'svc', '--node', '1', '--namespace', ns]);
  tt.match(cliText.stdout, new RegExp(`endpoint 70 on node 3 \\(pid ${srv.pid}`), 'dvs lookup in text');
  const missing = await runCli(tt, ['lookup', String(DC), 'nobody', '--node', '1', '--namespace', ns]);
  tt.equal(missing.code, 1, 'dvs lookup of an unknown name: exit 1');
  tt.match(missing.stderr, /^dvs: EDVSNOTBIND: no endpoint named "nobody" in DC 3/m);

  // ---- a call to the looked-up endpoint
  const n1 = attach({ node: 1, namespace: ns });
  tt.teardown(() => n1.detach());
  const me = n1.bind(DC, undefined, { name: 'client' });
  const entry = c1.lookup(DC, 'svc')!;
  const r = await me.call(entry.ep, Uint8Array.from([9]), { timeoutMs: 10000 });
  tt.same([...r.payload], [10], 'a call to the endpoint found by name');
  r.release();
  const self = await c2.waitForBind(DC, 'client', { timeoutMs: 10000 });
  tt.same([self.node, self.ep, self.pid], [1, me.ep, process.pid], 'an automatic number bound with a name is found by name');

  // ---- cluster-wide ps
  const ps = await runCli(tt, ['ps', '--node', '2', '--namespace', ns, '--json']);
  tt.equal(ps.code, 0, 'dvs ps --json exits 0');
  const pr = JSON.parse(ps.stdout) as PsResult & { namespace: string };
  tt.equal(pr.scope, 'cluster', 'cluster-wide by default');
  tt.same(pr.nodes.map((n) => [n.node, n.answered]), [[1, true], [2, true], [3, true]], 'every member answered');
  const row = (ep: number): unknown => {
    const x = pr.endpoints.find((e) => e.dc === DC && e.ep === ep);
    return x && [x.node, x.where, x.name, x.pid];
  };
  tt.same(row(70), [3, 'remote', 'svc', srv.pid], "node 3's server, with its name and pid");
  tt.same(row(me.ep), [1, 'remote', 'client', process.pid], "node 1's client");
  tt.equal(pr.endpoints.filter((e) => e.ep === 70).length, 1, 'each endpoint once (no proxies)');
  const local = await runCli(tt, ['ps', '--local', '--node', '2', '--namespace', ns, '--json']);
  const lr = JSON.parse(local.stdout) as PsResult;
  tt.equal(lr.scope, 'local', '--local: the node\'s own table');
  tt.same(lr.endpoints.filter((e) => e.dc === DC).map((e) => [e.ep, e.where, e.name]).sort(), [[70, 'remote', 'svc'], [me.ep, 'remote', 'client']].sort(), '--local lists the proxies, names from the directory');
  const api = await c3.ps();
  tt.same(api.endpoints.filter((e) => e.dc === DC).map((e) => [e.ep, e.node]).sort(), [[70, 3], [me.ep, 1]].sort(), 'cluster.ps() is the same');
  const apiLocal = await c3.ps({ all: false });
  tt.same(apiLocal.endpoints.filter((e) => e.where === 'local').map((e) => e.ep), [70], 'cluster.ps({ all: false }): node 3 only');

  // ---- unbind: the name leaves every cache; a timeout is EDVSTIMEDOUT
  (await me.call(entry.ep, 'quit', { timeoutMs: 10000 })).release();
  await srv.exit(10000);
  for (const c of clusters) await pollUntil(() => c.lookup(DC, 'svc') === null || undefined, 10000, `node ${c.node} forgets svc`);
  tt.pass('after the server exits, lookup is null on every node');
  tt.equal(c1.locate(DC, 70), null, 'and locate');
  const t0 = Date.now();
  tt.equal(await codeOf(c1.waitForBind(DC, 'svc', { timeoutMs: 300 })), 'EDVSTIMEDOUT', 'waitForBind times out with EDVSTIMEDOUT');
  tt.ok(Date.now() - t0 >= 290, 'not before its timeout');
  tt.equal(await codeOf(c1.waitForBind(DC, 'svc', { timeoutMs: 0 })), 'EDVSTIMEDOUT', 'timeoutMs 0 on an unbound name: EDVSTIMEDOUT at once');

  // ---- a member that cannot answer a cluster-wide ps is reported
  a2.child.proc.kill('SIGSTOP');
  try {
    const p = await runCli(tt, ['ps', '--node', '1', '--namespace', ns, '--json']);
    tt.equal(p.code, 0, 'dvs ps with a stopped member still exits 0');
    const x = JSON.parse(p.stdout) as PsResult;
    const n2 = x.nodes.find((n) => n.node === 2);
    tt.equal(n2?.answered, false, `node 2 is reported as not answered (${n2?.error})`);
    tt.same(x.nodes.filter((n) => n.node !== 2).map((n) => n.answered), [true, true], 'the others answered');
    tt.ok(x.endpoints.some((e) => e.ep === me.ep), 'their endpoints are listed');
    const text = await runCli(tt, ['ps', '--node', '1', '--namespace', ns]);
    tt.match(text.stdout, /node 2 \(\w+\) not included/, 'the text output says which node is missing');
  } finally {
    a2.child.proc.kill('SIGCONT');
  }

  // ---- views: a graceful leave shows in the handle's 'view' event; losing the agent closes it
  const views: View[] = [];
  c1.on('view', (v) => views.push(v));
  await a3.stop();
  await pollUntil(() => views.some((v) => v.members.find((m) => m.node === 3)?.state === 'left') || undefined, 10000, "node 3 'left' in a view event");
  tt.ok(c1.view().number > 0 && c1.view().members.find((m) => m.node === 3)?.state === 'left', "view() shows node 3 'left'");
  const closed = new Promise<unknown>((resolve) => c2.on('close', resolve));
  const pending = codeOf(c2.waitForBind(DC, 'never'));
  await a2.stop();
  tt.equal(await pending, 'EDVSNOTCONN', 'a pending waitForBind fails with EDVSNOTCONN when its agent stops');
  const err = (await within(closed, 5000, 'close event')) as { code?: string } | null;
  tt.equal(err?.code, 'EDVSNOTCONN', "the handle emits 'close' with EDVSNOTCONN");
  tt.equal(await codeOf(() => c2.lookup(DC, 'x')), 'EDVSNOTCONN', 'then its methods throw EDVSNOTCONN');
  n1.detach();
  for (const c of clusters) c.close();
  await a1.stop();
  tt.same(shmFiles(ns), [], 'no segment left');
});

t.test('Cluster API argument checks and close (in-process agent)', async (tt) => {
  const ns = uniqueNs('names-api');
  const [p1] = await freeUdpPorts(1);
  const agents: Agent[] = [];
  tt.teardown(async () => {
    for (const a of agents) await a.stop();
  });
  const a1 = await startAgent({ node: 1, listen: { host: '127.0.0.1', port: p1 }, peers: [], seeds: [], namespace: ns }, silentLogger);
  agents.push(a1);
  const inproc = a1.cluster();
  const remote = await connectCluster({ node: 1, namespace: ns });
  const n = attach({ node: 1, namespace: ns });
  tt.teardown(() => n.detach());
  const waits = [inproc, remote].map((c) => c.waitForBind(1, 'late'));
  const ep = n.bind(1, 40, { name: 'late' });
  const got = (await within(Promise.all(waits), 5000, 'waitForBind without a timeout')) as ClusterEntry[];
  tt.same(got.map((e) => [e.node, e.ep, e.name]), [[1, 40, 'late'], [1, 40, 'late']], 'both handles (in-process and over the socket) see the bind');
  tt.ok(Object.isFrozen(got[0]), 'entries are frozen (they are the cache)');
  tt.equal(inproc.lookup(1, 'late'), inproc.lookup(1, 'late'), 'lookup returns the cached entry (no copy)');

  for (const c of [inproc, remote]) {
    const bad: [string, () => unknown, string][] = [
      ['lookup with dc -1', () => c.lookup(-1, 'a'), 'EDVSBADDCID'],
      ['lookup with dc "1"', () => c.lookup('1' as unknown as number, 'late'), 'EDVSINVAL'],
      ['lookup with an empty name', () => c.lookup(1, ''), 'EDVSINVAL'],
      ['lookup with a 32-byte name', () => c.lookup(1, 'x'.repeat(32)), 'EDVSINVAL'],
      ['lookup with a name of 16 two-byte characters (32 bytes)', () => c.lookup(1, 'é'.repeat(16)), 'EDVSINVAL'],
      ['lookup with a NUL in the name', () => c.lookup(1, 'a\0b'), 'EDVSINVAL'],
      ['lookup with a number as the name', () => c.lookup(1, 5 as unknown as string), 'EDVSINVAL'],
      ['locate with ep 2^24', () => c.locate(1, 1 << 24), 'EDVSENDPOINT'],
      ['locate with ep 1.5', () => c.locate(1, 1.5), 'EDVSINVAL'],
      ['waitForBind with an object', () => c.waitForBind(1, {} as unknown as string), 'EDVSINVAL'],
      ['waitForBind with a negative timeout', () => c.waitForBind(1, 'x', { timeoutMs: -1 }), 'EDVSINVAL'],
      ['waitForBind with options null', () => c.waitForBind(1, 'x', null as unknown as object), 'EDVSINVAL'],
      ['waitForBind with dc 5000', () => c.waitForBind(5000, 'x'), 'EDVSBADDCID'],
      ['ps with all "yes"', () => c.ps({ all: 'yes' as unknown as boolean }), 'EDVSINVAL'],
    ];
    for (const [what, f, code] of bad) tt.equal(await codeOf(f), code, `${c === inproc ? 'in-process' : 'socket'}: ${what}: ${code}`);
    tt.equal(c.lookup(1, 'é'.repeat(15)), null, 'a 30-byte name is fine (not bound: null)');
  }
  for (const [what, o, code] of [
    ['node 1024', { node: 1024 }, 'EDVSBADNODEID'],
    ['a bad namespace', { namespace: 'a/b' }, 'EDVSINVAL'],
    ['options not an object', 7, 'EDVSINVAL'],
    ['a node without an agent', { node: 9, namespace: ns }, 'EDVSNOTCONN'],
  ] as const)
    tt.equal(await codeOf(connectCluster(o as never)), code, `connectCluster with ${what}: ${code}`);

  // close(): pending waits fail, later calls throw, no handle keeps the process alive
  for (const c of [inproc, remote]) {
    const w = c.waitForBind(1, 'never', { timeoutMs: 60000 });
    c.close();
    c.close();
    tt.equal(await codeOf(w), 'EDVSNOTCONN', `${c === inproc ? 'in-process' : 'socket'}: close() fails a pending waitForBind with EDVSNOTCONN`);
    for (const [what, f] of [
      ['lookup', () => c.lookup(1, 'late')],
      ['locate', () => c.locate(1, 40)],
      ['view', () => c.view()],
      ['nodes', () => c.nodes()],
      ['dcs', () => c.dcs()],
      ['waitForBind', () => c.waitForBind(1, 'late')],
      ['ps', () => c.ps()],
      ['createDc', () => c.createDc(9, [1])],
    ] as const)
      tt.equal(await codeOf(f), 'EDVSNOTCONN', `after close, ${what} → EDVSNOTCONN`);
    tt.ok(c.isClosed, 'isClosed');
  }
  ep.close();
  n.detach();
});
