// cluster-dc.test.ts — DC membership enforcement end to end, with real `dvs
// agent` processes (embedded membership from one seed) and the `dvs dc` CLI:
// `dvs dc create 5 --nodes 1,2` reaches every agent; a bind in DC 5 on node 3
// fails with EDVSNODCNODE; a call into DC 5 works between nodes 1 and 2;
// `dvs dc add-node 5 3` lets node 3 bind; `dvs dc remove-node 5 3` while node
// 3 still has an endpoint bound there fails with EDVSBUSY, and succeeds once it
// is closed; every agent's `dvs dc list --json` shows each change; an agent
// that joins later receives the table; and in-process agents: the Cluster API
// (createDc/addNodeToDc/removeNodeFromDc, 'dcs' events), the initial table from
// the configuration, and argument checks.
import t from 'tap';
import { attach, startAgent, type Agent, type DcInfo } from '../lib/index.js';
import { silentLogger } from '../lib/agent/log.js';
import { codeOf, shmFiles, spawnFixture, uniqueNs, within, type Child, type T } from './helpers.js';
import { AgentProc, freeUdpPorts, pollUntil, runCli, startSeeded, waitRemote } from './cluster-helpers.js';

const DC = 5;

async function dcList(tt: T, a: AgentProc): Promise<DcInfo[]> {
  const r = await runCli(tt, ['dc', 'list', '--node', String(a.node), '--namespace', a.opts.ns, '--json']);
  if (r.code !== 0) throw new Error(`dvs dc list --node ${a.node}: exit ${r.code}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { dcs: DcInfo[] }).dcs;
}

/** Ends a fixture the orderly way (it exits when its stdin closes, unbinding as it detaches). */
async function quit(c: Child): Promise<void> {
  c.proc.stdin!.end();
  await c.exit(10000);
}

/** Waits until every agent's DC table lists `dc` with `nodes`; then checks it through the CLI of each. */
async function seenEverywhere(tt: T, agents: AgentProc[], dc: number, nodes: number[], what: string): Promise<void> {
  await pollUntil(
    async () => {
      const all = await Promise.all(agents.map((a) => a.request<{ dcs: DcInfo[] }>('dcs')));
      return all.every((r) => JSON.stringify(r.dcs.find((d) => d.dc === dc)?.nodes) === JSON.stringify(nodes)) || undefined;
    },
    10000,
    what,
  );
  for (const a of agents) tt.same((await dcList(tt, a)).find((d) => d.dc === dc)?.nodes, nodes, `${what}: dvs dc list --json on node ${a.node}`);
}

t.test('DC enforcement across agents through dvs dc', async (tt) => {
  const ns = uniqueNs('dc-e2e');
  const agents = await startSeeded(tt, ns, [1, 2, 3]);
  const [a1, a2, a3] = agents;
  const cli = (node: number, ...args: string[]) => runCli(tt, [...args, '--node', String(node), '--namespace', ns]);

  tt.same(await dcList(tt, a3), [], 'no DC table entries at first');
  // Before the DC is defined it is open: node 3 may bind in it.
  const early = spawnFixture(tt, 'server', [ns, 3, DC, 30, 'idle']);
  tt.equal(await within(early.line(), 30000, 'early bind'), 'ready', 'an undefined DC is open to every node');
  await quit(early);
  await pollUntil(async () => !(await a3.request<{ endpoints: { ep: number }[] }>('ps')).endpoints.some((e) => e.ep === 30), 10000, 'the early endpoint gone');

  // ---- create DC 5 on nodes 1, 2 (through node 1's agent)
  const created = await cli(1, 'dc', 'create', String(DC), '--nodes', '2,1', '--json');
  tt.equal(created.code, 0, `dvs dc create exits 0 ${created.stderr}`);
  tt.same(JSON.parse(created.stdout), { dc: DC, nodes: [1, 2], version: 1 }, 'and prints the new entry (nodes sorted)');
  await seenEverywhere(tt, agents, DC, [1, 2], 'DC 5 = {1,2}');
  const text = await cli(2, 'dc', 'list');
  tt.match(text.stdout, /^5\s+1,2\s+1$/m, 'dvs dc list prints a row per DC');

  // ---- node 3 may not bind in DC 5; nodes 1 and 2 may, and talk
  const refused = spawnFixture(tt, 'server', [ns, 3, DC, 31, 'idle']);
  tt.same(await within(refused.json(), 30000, 'bind on node 3'), { error: 'EDVSNODCNODE' }, 'a bind in DC 5 on node 3 fails with EDVSNODCNODE');
  await refused.exit();
  const srv1 = spawnFixture(tt, 'server', [ns, 1, DC, 10, 'echo']);
  tt.equal(await within(srv1.line(), 30000, 'server on node 1'), 'ready', 'node 1 binds in DC 5');
  await waitRemote(a2, DC, 10);
  const n2 = attach({ node: 2, namespace: ns });
  tt.teardown(() => n2.detach());
  const r = await n2.bind(DC, 11).call(10, Uint8Array.from([1]), { timeoutMs: 10000 });
  tt.same([...r.payload], [2], 'a call in DC 5 from node 2 to node 1');
  r.release();
  const n3 = attach({ node: 3, namespace: ns });
  tt.teardown(() => n3.detach());
  tt.equal(await codeOf(() => n3.bind(DC, 12)), 'EDVSNODCNODE', 'node.bind in DC 5 on node 3: EDVSNODCNODE');
  tt.equal(await codeOf(() => n3.bind(DC)), 'EDVSNODCNODE', 'an automatic number too');
  tt.ok(n3.bind(DC + 1, 12), 'node 3 still binds in another (open) DC');

  // ---- add node 3 (through node 2's agent)
  const added = await cli(2, 'dc', 'add-node', String(DC), '3', '--json');
  tt.equal(added.code, 0, 'dvs dc add-node exits 0');
  tt.same(JSON.parse(added.stdout), { dc: DC, nodes: [1, 2, 3], version: 2 }, 'and prints the entry with a higher version');
  await seenEverywhere(tt, agents, DC, [1, 2, 3], 'DC 5 = {1,2,3}');
  const srv3 = spawnFixture(tt, 'server', [ns, 3, DC, 32, 'idle']);
  tt.equal(await within(srv3.line(), 30000, 'bind on node 3 after add-node'), 'ready', 'after add-node, node 3 binds in DC 5');
  const again = await cli(1, 'dc', 'add-node', String(DC), '3', '--json');
  tt.same(JSON.parse(again.stdout).version, 2, 'adding a member again changes nothing');

  // ---- remove node 3 while its endpoint is bound: EDVSBUSY (on any agent that knows it)
  await waitRemote(a1, DC, 32);
  const busy = await cli(1, 'dc', 'remove-node', String(DC), '3');
  tt.equal(busy.code, 1, 'dvs dc remove-node with a bound endpoint: exit 1');
  tt.match(busy.stderr, /^dvs: EDVSBUSY: node 3 still has 1 endpoint bound in DC 5/m, `it says why: ${busy.stderr.trim()}`);
  await seenEverywhere(tt, agents, DC, [1, 2, 3], 'DC 5 unchanged after EDVSBUSY');
  await quit(srv3);
  await pollUntil(async () => !(await a1.request<{ endpoints: { ep: number }[] }>('ps')).endpoints.some((e) => e.ep === 32), 10000, "node 3's endpoint gone from node 1's directory");
  const removed = await cli(1, 'dc', 'remove-node', String(DC), '3', '--json');
  tt.equal(removed.code, 0, `once it is closed, remove-node succeeds ${removed.stderr}`);
  tt.same(JSON.parse(removed.stdout), { dc: DC, nodes: [1, 2], version: 3 });
  await seenEverywhere(tt, agents, DC, [1, 2], 'DC 5 = {1,2} again');
  const refused2 = spawnFixture(tt, 'server', [ns, 3, DC, 33, 'idle']);
  tt.same(await within(refused2.json(), 30000, 'bind on node 3'), { error: 'EDVSNODCNODE' }, 'node 3 is refused again');
  await refused2.exit();

  // ---- errors from the table
  const exists = await cli(3, 'dc', 'create', String(DC), '--nodes', '3');
  tt.equal(exists.code, 1, 'creating an existing DC: exit 1');
  tt.match(exists.stderr, /^dvs: EDVSSLOTUSED: DC 5 exists \(nodes 1,2\)/m, exists.stderr.trim());
  const unknown = await cli(3, 'dc', 'add-node', '77', '3');
  tt.equal(unknown.code, 1, 'add-node to an unknown DC: exit 1');
  tt.match(unknown.stderr, /^dvs: EDVSBADDCID: DC 77 does not exist/m, unknown.stderr.trim());

  // ---- an agent that joins later receives the table
  const [p4] = await freeUdpPorts(1);
  const a4 = await new AgentProc(tt, { node: 4, port: p4, peers: {}, ns, extra: ['--seeds', `1=127.0.0.1:${a1.opts.port}`] }).start();
  await seenEverywhere(tt, [a4], DC, [1, 2], 'a late joiner has DC 5 = {1,2}');
  const st = await runCli(tt, ['agent', 'status', '--node', '4', '--namespace', ns, '--json']);
  tt.equal(st.code, 0, 'dvs agent status --json exits 0');
  tt.same((JSON.parse(st.stdout) as { dcs: DcInfo[] }).dcs, [{ dc: DC, nodes: [1, 2], version: 3 }], 'its status shows the table');

  n2.detach();
  n3.detach();
  srv1.kill('SIGKILL');
  await srv1.exit();
  await Promise.all([...agents, a4].map((a) => a.stop()));
  tt.same(shmFiles(ns), [], 'no segment left');
});

t.test('Cluster API for DCs (in-process agents), the table from the configuration, argument checks', async (tt) => {
  const ns = uniqueNs('dc-api');
  const [p1, p2] = await freeUdpPorts(2);
  const agents: Agent[] = [];
  tt.teardown(async () => {
    for (const a of agents) await a.stop();
  });
  // Node 1 starts with DC 7 = {2} from its configuration (as `--dc 7:2`).
  const a1 = await startAgent({ node: 1, listen: { host: '127.0.0.1', port: p1 }, peers: [{ node: 2, host: '127.0.0.1', port: p2 }], namespace: ns, dcs: [{ dc: 7, nodes: [2] }] }, silentLogger);
  agents.push(a1);
  const n1 = attach({ node: 1, namespace: ns });
  tt.teardown(() => n1.detach());
  tt.equal(await codeOf(() => n1.bind(7, 1)), 'EDVSNODCNODE', 'a DC from the configuration is enforced from the start');
  const a2 = await startAgent({ node: 2, listen: { host: '127.0.0.1', port: p2 }, peers: [{ node: 1, host: '127.0.0.1', port: p1 }], namespace: ns }, silentLogger);
  agents.push(a2);
  const c2 = a2.cluster();
  tt.teardown(() => c2.close());
  const events: DcInfo[][] = [];
  c2.on('dcs', (d) => events.push(d));
  await pollUntil(() => c2.dcs().some((d) => d.dc === 7) || undefined, 10000, 'node 2 learns DC 7');
  tt.same(c2.dcs(), [{ dc: 7, nodes: [2], version: 0 }], 'node 2 learns the configured table when the link comes up');

  const c1 = a1.cluster();
  tt.teardown(() => c1.close());
  tt.same(await c1.createDc(8, [1, 2, 2]), { dc: 8, nodes: [1, 2], version: 1 }, 'createDc (duplicates dropped)');
  tt.same(c1.dcs().map((d) => d.dc), [7, 8], 'the handle shows it when createDc resolves');
  await pollUntil(() => events.some((e) => e.some((d) => d.dc === 8)) || undefined, 10000, "node 2's 'dcs' event");
  tt.pass("node 2's handle got a 'dcs' event with DC 8");
  const ep = n1.bind(8, 5);
  tt.equal(await codeOf(c1.removeNodeFromDc(8, 1)), 'EDVSBUSY', 'removeNodeFromDc with an endpoint bound: EDVSBUSY');
  ep.close();
  await pollUntil(() => !a1.ps().some((r) => r.ep === 5) || undefined, 5000, 'endpoint closed');
  tt.same(await c1.removeNodeFromDc(8, 1), { dc: 8, nodes: [2], version: 2 }, 'then it succeeds');
  tt.same(await c1.removeNodeFromDc(8, 1), { dc: 8, nodes: [2], version: 2 }, 'removing a non-member changes nothing');
  tt.equal(await codeOf(() => n1.bind(8, 6)), 'EDVSNODCNODE', 'node 1 may no longer bind in DC 8');
  tt.same((await c1.addNodeToDc(7, 1)).nodes, [1, 2], 'addNodeToDc on a configured DC');
  tt.ok(n1.bind(7, 1), 'node 1 now binds in DC 7');

  const bad: [string, () => unknown, string][] = [
    ['createDc of an existing DC', () => c1.createDc(7, [1]), 'EDVSSLOTUSED'],
    ['createDc with dc -1', () => c1.createDc(-1, [1]), 'EDVSBADDCID'],
    ['createDc with dc 4096', () => c1.createDc(4096, [1]), 'EDVSBADDCID'],
    ['createDc with dc "9"', () => c1.createDc('9' as unknown as number, [1]), 'EDVSINVAL'],
    ['createDc without nodes', () => c1.createDc(9, []), 'EDVSINVAL'],
    ['createDc with nodes not an array', () => c1.createDc(9, 1 as unknown as number[]), 'EDVSINVAL'],
    ['createDc with node 1024', () => c1.createDc(9, [1, 1024]), 'EDVSBADNODEID'],
    ['addNodeToDc of an unknown DC', () => c1.addNodeToDc(9, 1), 'EDVSBADDCID'],
    ['addNodeToDc with node 2.5', () => c1.addNodeToDc(7, 2.5), 'EDVSINVAL'],
    ['removeNodeFromDc of an unknown DC', () => c1.removeNodeFromDc(9, 1), 'EDVSBADDCID'],
  ];
  for (const [what, f, code] of bad) tt.equal(await codeOf(f), code, `${what}: ${code}`);
  tt.notOk(c1.dcs().some((d) => d.dc === 9), 'nothing was created by the bad calls');
  c1.close();
  tt.equal(await codeOf(() => c1.dcs()), 'EDVSNOTCONN', 'a closed handle throws EDVSNOTCONN');
  tt.equal(await codeOf(c1.createDc(9, [1])), 'EDVSNOTCONN', 'and rejects EDVSNOTCONN');
  n1.detach();
});
