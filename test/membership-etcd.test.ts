// membership-etcd.test.ts — the etcd registry (`--registry etcd://...`)
// against a real etcd (Debian etcd-server; skipped without it).
//  (the cluster scenarios shared with the embedded backend — five agents,
//  names, DCs, partition, leave, kill -9, rejoin — are in
//  membership-backends.test.ts; this file has what is etcd's own:)
//  - etcd stopped and restarted mid-test: calls between existing endpoints go
//    on while etcd is down, every agent logs the error (EDVSNOTCONN, etcd's
//    address) and keeps running; after the restart a bind made during the
//    outage and a new one are visible everywhere;
//  - etcd unreachable when an agent starts: it runs, logs, retries, and
//    registers once etcd is up;
//  - the backends driven directly (no engine): create-if-absent binds and
//    conflicts, DC table transactions, views, leave vs. expiry, EDVSNOTCONN
//    while etcd is away;
//  - --registry validation.
import t from 'tap';
import { Etcd3 } from 'etcd3';
import { attach, type Endpoint } from '../lib/index.js';
import type { NodesResult } from '../lib/agent/agent.js';
import type { AgentConfig } from '../lib/agent/config.js';
import type { Logger } from '../lib/agent/log.js';
import type { DcInfo } from '../lib/dc/dc-table.js';
import type { DirectoryEntry } from '../lib/directory/directory.js';
import type { View } from '../lib/membership/membership.js';
import { createEtcdRegistry, type EtcdRegistry } from '../lib/registry/etcd/index.js';
import { ready, shmFiles, sleep, spawnFixture, uniqueNs, within, type Child } from './helpers.js';
import { AgentProc, freeUdpPorts, runCli, waitRemote } from './cluster-helpers.js';
import { EtcdServer, etcdMissing, freeTcpPort, startEtcd } from './etcd-helpers.js';

const DC = 1;
const IDS = [1, 2, 3, 4, 5];
/** Lease TTL 2 s; etcd checks expiry every 500 ms; plus process scheduling on a loaded machine. */
const DEAD_BOUND_MS = 6000;
const skip = etcdMissing();

async function nodesOf(a: AgentProc): Promise<NodesResult> {
  return a.request<NodesResult>('nodes');
}

/** Polls `nodes` on every agent until `ok` holds for all; returns their last answers. */
async function waitViews(agents: AgentProc[], ok: (r: NodesResult) => boolean, ms: number, what: string): Promise<NodesResult[]> {
  const deadline = Date.now() + ms;
  let last: (NodesResult | null)[] = [];
  for (;;) {
    last = await Promise.all(agents.map((a) => nodesOf(a).catch(() => null)));
    if (last.every((r) => r && ok(r))) return last as NodesResult[];
    if (Date.now() > deadline)
      throw new Error(`${what}: not reached within ${ms} ms: ${JSON.stringify(last.map((r) => r && { node: r.node, view: r.view, members: r.members.map((m) => `${m.node}:${m.state}`) }))}`);
    await sleep(20);
  }
}

/** Polls `f` until it is true (bounded). */
async function waitFor(f: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(20);
  }
}

/**
 * Ends an echo server (fixture 'server') with a 'quit' call and waits for its
 * exit. The server exits right after replying; the reply still arrives (a
 * proxy the directory removes retires only after a grace period).
 */
async function quit(from: Endpoint, ep: number, server: Child): Promise<void> {
  (await from.call(ep, 'quit', { timeoutMs: 10000 })).release();
  await server.exit(10000);
}

const codeOf = (e: unknown): string => (typeof e === 'string' ? e : ((e as { code?: string }).code ?? String(e)));
const stateOf = (r: NodesResult, node: number): string | undefined => r.members.find((m) => m.node === node)?.state;
const etcdArgs = (url: string): string[] => ['--registry', url];
/** Crash markers in an agent's stderr. */
const CRASH = /Unhandled|UnhandledPromiseRejection|TypeError|ReferenceError|uncaught|FATAL|Segmentation/i;

t.test('etcd stopped and restarted mid-test: traffic goes on, agents log and retry, then resync', { skip }, async (tt) => {
  const etcd = await startEtcd(tt);
  const ns = uniqueNs('etcd-outage');
  const ids = [1, 2, 3];
  const ports = await freeUdpPorts(ids.length);
  const agents = ids.map((n, i) => new AgentProc(tt, { node: n, port: ports[i], peers: {}, ns, extra: etcdArgs(etcd.url) }));
  const byId = (n: number): AgentProc => agents[ids.indexOf(n)];
  await Promise.all(agents.map((a) => a.start()));
  await waitViews(agents, (r) => ids.every((n) => stateOf(r, n) === 'alive'), 15000, 'three alive everywhere');

  const srv2 = spawnFixture(tt, 'server', [ns, 2, DC, 7, 'echo']);
  await ready(srv2);
  await waitRemote(byId(1), DC, 7);
  await waitRemote(byId(3), DC, 7);
  const n1 = attach({ node: 1, namespace: ns });
  tt.teardown(() => n1.detach());
  const me = n1.bind(DC, 8);
  let n = 0;
  const callOnce = async (dst: number): Promise<void> => {
    const b = n++ & 0xff;
    const r = await me.call(dst, Uint8Array.from([b]), { timeoutMs: 5000 });
    const got = r.payload[0];
    r.release();
    if (got !== ((b + 1) & 0xff)) throw new Error(`bad answer ${got} to ${b}`);
  };
  await callOnce(7);

  // ---- etcd goes away
  await etcd.stop();
  tt.notOk(etcd.running, 'etcd stopped');
  await waitFor(() => agents.every((a) => /EDVSNOTCONN/.test(a.child.stderr) && a.child.stderr.includes(etcd.address)), 10000, 'every agent logs EDVSNOTCONN naming etcd');
  tt.pass("every agent logged an EDVSNOTCONN error naming etcd's address");
  tt.match(byId(2).child.stderr, /"level":"error"/, 'at level error');
  // Longer than a lease TTL: calls between existing endpoints go on.
  const until = Date.now() + 3500;
  let ok = 0;
  let failed: unknown = null;
  while (Date.now() < until) {
    try {
      await callOnce(7);
      ok++;
    } catch (e) {
      failed = e;
      break;
    }
    await sleep(25);
  }
  tt.equal(failed, null, `calls node 1 → node 2 kept working while etcd was down (${ok} calls over 3.5 s)`);
  // A bind during the outage works locally; it is registered when etcd returns.
  const srv3 = spawnFixture(tt, 'server', [ns, 3, DC, 30, 'echo']);
  await ready(srv3);
  const during = await Promise.all(agents.map(nodesOf));
  tt.ok(during.every((r) => ids.every((x) => stateOf(r, x) === 'alive')), 'views unchanged: nobody is declared dead because etcd is away');
  tt.ok(agents.every((a) => !a.child.exited), 'no agent exited');

  // ---- etcd is back (same ports, same data)
  await etcd.start();
  tt.ok(etcd.running, 'etcd restarted');
  await waitRemote(byId(1), DC, 30, 15000);
  await waitRemote(byId(2), DC, 30, 15000);
  tt.pass('the endpoint bound on node 3 during the outage is visible on nodes 1 and 2');
  const srv1 = spawnFixture(tt, 'server', [ns, 1, DC, 31, 'echo']);
  await ready(srv1);
  await waitRemote(byId(2), DC, 31, 15000);
  await waitRemote(byId(3), DC, 31, 15000);
  tt.pass('a new bind after the restart (node 1) is visible on nodes 2 and 3');
  await callOnce(30);
  await callOnce(7);
  tt.pass('calls reach node 3 (bound during the outage) and node 2');
  await waitViews(agents, (r) => ids.every((x) => stateOf(r, x) === 'alive'), 10000, 'all alive after the restart');
  for (const a of agents) {
    tt.notOk(a.child.exited, `agent ${a.node} is running`);
    tt.notMatch(a.child.stderr, CRASH, `agent ${a.node}: no crash in its log`);
  }
  for (const [s, ep] of [
    [srv2, 7],
    [srv3, 30],
    [srv1, 31],
  ] as const)
    await quit(me, ep, s);
  n1.detach();
  await Promise.all(agents.map((a) => a.stop()));
});

t.test('etcd unreachable when the agent starts: it runs, logs, retries, registers when etcd comes', { skip }, async (tt) => {
  const etcd = await EtcdServer.create(tt);  // ports chosen, not started
  const ns = uniqueNs('etcd-late');
  const [p1, p2] = await freeUdpPorts(2);
  const a1 = await new AgentProc(tt, { node: 1, port: p1, peers: {}, ns, extra: etcdArgs(etcd.url) }).start();
  await waitFor(() => /EDVSNOTCONN/.test(a1.child.stderr) && a1.child.stderr.includes(etcd.address), 10000, 'agent 1 logs the error');
  tt.pass('the agent started and logged EDVSNOTCONN naming etcd');
  const r = await nodesOf(a1);
  tt.equal(r.mode, 'etcd', "it reports the etcd registry");
  tt.same(r.members.map((m) => [m.node, m.state]), [[1, 'alive']], 'and knows only itself');
  // DC changes need etcd: a clear error, not a hang.
  const dcErr = await a1.request('dc-create', { dc: 9, nodes: [1] }).catch((e: unknown) => e);
  tt.equal(codeOf(dcErr), 'EDVSNOTCONN', 'a DC change fails with EDVSNOTCONN while etcd is unreachable');
  await sleep(1500);
  tt.notOk(a1.child.exited, 'still running after retries');
  await etcd.start();
  const a2 = await new AgentProc(tt, { node: 2, port: p2, peers: {}, ns, extra: etcdArgs(etcd.url) }).start();
  await waitViews([a1, a2], (x) => stateOf(x, 1) === 'alive' && stateOf(x, 2) === 'alive', 15000, 'both alive on both');
  tt.pass('once etcd is up, agent 1 registers and both see each other');
  tt.notMatch(a1.child.stderr, CRASH, 'no crash in its log');
  const exits = await Promise.all([a1.stop(), a2.stop()]);
  tt.same(exits, [{ code: 0, signal: null }, { code: 0, signal: null }], `both agents exit 0 on SIGTERM (stderr 2: ${a2.child.stderr.slice(-500)})`);
  tt.same(shmFiles(ns), [], 'no segment left');
});

t.test('--registry is validated', async (tt) => {
  const ns = uniqueNs('etcd-flags');
  const [p1] = await freeUdpPorts(1);
  const bad = await runCli(tt, ['agent', '--node', '1', '--listen', `127.0.0.1:${p1}`, '--namespace', ns, '--registry', 'http://127.0.0.1:2379']);
  tt.equal(bad.code, 1, 'not etcd://: exit 1');
  tt.match(bad.stderr, /--registry must be etcd:\/\/<host>:<port>/, 'with a clear message');
  const noPort = await runCli(tt, ['agent', '--node', '1', '--listen', `127.0.0.1:${p1}`, '--namespace', ns, '--registry', 'etcd://127.0.0.1']);
  tt.equal(noPort.code, 1, 'no port: exit 1');
  const both = await runCli(tt, ['agent', '--node', '1', '--listen', `127.0.0.1:${p1}`, '--namespace', ns, '--registry', 'etcd://127.0.0.1:2379', '--seeds', `1=127.0.0.1:${p1}`]);
  tt.equal(both.code, 1, '--registry with --seeds: exit 1');
  tt.match(both.stderr, /registry and seeds exclude each other/, 'and says why');
});

// ---- the backends driven directly (what a shared suite can use without agents)

interface FakeNode {
  node: number;
  reg: EtcdRegistry;
  views: View[];
  /** Each remote node's endpoints as applied to the "data plane". */
  applied: Map<number, DirectoryEntry[]>;
  dcChanges: DcInfo[][];
  peers: Map<number, string>;
  logs: { level: string; msg: string; fields?: Record<string, unknown> }[];
  bound: Map<string, number>;
}

function fakeNode(url: string, ns: string, node: number, dcs: { dc: number; nodes: number[] }[] = []): FakeNode {
  const f: FakeNode = { node, reg: null as unknown as EtcdRegistry, views: [], applied: new Map(), dcChanges: [], peers: new Map(), logs: [], bound: new Map() };
  const log: Logger = (level, msg, fields) => f.logs.push({ level, msg, fields });
  const config: AgentConfig = { node, listen: { host: '127.0.0.1', port: 20000 + node }, peers: [], registry: url, namespace: ns, dcs };
  f.reg = createEtcdRegistry(
    {
      config,
      node,
      host: '127.0.0.1',
      port: 20000 + node,
      incarnation: Date.now() * 1000 + node,
      deadAfterMs: 1000,
      suspectMs: 500,
      log,
      membershipHost: {
        addPeer: (n, host, port) => f.peers.set(n, `${host}:${port}`),
        removePeer: (n) => {
          f.peers.delete(n);
          f.applied.delete(n);
        },
        forget: (n) => f.applied.delete(n),
        send: () => {},
        log,
      },
      directoryHost: {
        send: () => {},
        apply: (n, eps) => void f.applied.set(n, [...eps]),
        peersUp: () => [],
        warn: (msg, fields) => log('warn', msg, fields),
      },
      dcHost: {
        send: () => {},
        peersUp: () => [],
        boundIn: (dc, n) => f.bound.get(`${dc}:${n}`) ?? 0,
        warn: (msg, fields) => log('warn', msg, fields),
      },
    },
    { retryMaxMs: 200 },
  );
  f.reg.membership.on('view', (v) => f.views.push(v));
  f.reg.dcs.on('change', (d) => f.dcChanges.push(d));
  return f;
}

const ep = (dc: number, e: number, gen = 1, pid = 100, name?: string): DirectoryEntry => (name ? { dc, ep: e, gen, pid, name } : { dc, ep: e, gen, pid });
const stateIn = (f: FakeNode, node: number): string | undefined => f.reg.membership.view().members.find((m) => m.node === node)?.state;

t.test('etcd backends driven directly: binds, conflicts, DC table, views, leave and expiry, outage', { skip }, async (tt) => {
  const etcd = await startEtcd(tt);
  const ns = uniqueNs('etcd-unit');
  const a = fakeNode(etcd.url, ns, 1, [{ dc: 5, nodes: [1, 2] }]);
  const b = fakeNode(etcd.url, ns, 2, [{ dc: 5, nodes: [3] }]);
  tt.teardown(() => {
    a.reg.stopNow();
    b.reg.stopNow();
  });
  await a.reg.start();
  await b.reg.start();
  const raw = new Etcd3({ hosts: `http://${etcd.address}` });
  tt.teardown(() => raw.close());
  const value = async (k: string): Promise<Record<string, unknown> | null> => {
    const s = await raw.get(`/dvs/${ns}/${k}`).string();
    return s === null ? null : (JSON.parse(s) as Record<string, unknown>);
  };

  // ---- membership
  await waitFor(() => stateIn(a, 2) === 'alive' && stateIn(b, 1) === 'alive', 10000, 'a and b see each other');
  tt.equal(a.peers.get(2), '127.0.0.1:20002', 'a adds b as a transport peer');
  tt.equal(b.peers.get(1), '127.0.0.1:20001', 'b adds a as a transport peer');
  tt.ok(a.views.every((v, i) => i === 0 || v.number === a.views[i - 1].number + 1), `view numbers increase by one (${a.views.map((v) => v.number)})`);
  tt.same(a.reg.membership.view(), a.views[a.views.length - 1], 'view() is the last view emitted');
  tt.match(await value('nodes/1'), { address: '127.0.0.1:20001' }, 'node key /dvs/<ns>/nodes/1');

  // ---- several members in --registry: a dead one is skipped, the session stays on a live one
  const dead = await freeTcpPort();
  const d = fakeNode(`etcd://127.0.0.1:${dead},${etcd.address}`, ns, 9);
  tt.teardown(() => d.reg.stopNow());
  let downs = 0;
  d.reg.session.on('down', () => downs++);
  await d.reg.start();
  await waitFor(() => stateIn(a, 9) === 'alive', 10000, 'a sees node 9 (registered through the second member)');
  const downsAtUp = downs;
  await sleep(2000);
  tt.equal(downs, downsAtUp, 'once up on the live member, the session stays up (streams pinned to it)');
  tt.equal(d.reg.session.state, 'up', 'node 9 is connected');
  await d.reg.stop();
  await waitFor(() => stateIn(a, 9) === 'left', 5000, 'node 9 left');

  // ---- DC table: the configured DC exists once (the first agent's); transactions
  await waitFor(() => b.reg.dcs.list().some((d) => d.dc === 5), 10000, 'b sees DC 5');
  tt.same(a.reg.dcs.list(), [{ dc: 5, nodes: [1, 2], version: 0 }], "the first agent's configured DC 5 (version 0)");
  tt.same(b.reg.dcs.list(), a.reg.dcs.list(), 'b has the same table (its own --dc did not overwrite it)');
  tt.same(await a.reg.dcs.create(7, [2, 1]), { dc: 7, nodes: [1, 2], version: 1 }, 'create DC 7');
  await waitFor(() => b.dcChanges.some((l) => l.some((d) => d.dc === 7)), 10000, "b's change event for DC 7");
  tt.equal(codeOf(await b.reg.dcs.create(7, [3]).catch((e) => e)), 'EDVSSLOTUSED', 'creating it again: EDVSSLOTUSED');
  tt.equal(codeOf(await b.reg.dcs.addNode(8, 3).catch((e) => e)), 'EDVSBADDCID', 'adding to an unknown DC: EDVSBADDCID');
  const [x, y] = await Promise.all([a.reg.dcs.addNode(7, 3), b.reg.dcs.addNode(7, 4)]);
  tt.ok(x.version >= 2 && y.version >= 2, 'two concurrent addNode both succeed (compare-and-swap, retried)');
  const dc7 = (f: FakeNode): string => JSON.stringify(f.reg.dcs.list().find((d) => d.dc === 7));
  await waitFor(() => dc7(a) === dc7(b) && JSON.parse(dc7(a)).nodes.length === 4, 10000, 'DC 7 with four nodes on a and b');
  tt.same(JSON.parse(dc7(b)), { dc: 7, nodes: [1, 2, 3, 4], version: 3 }, 'DC 7 spans 1,2,3,4 at version 3 on a and b');
  a.bound.set('7:4', 2);
  tt.equal(codeOf(await a.reg.dcs.removeNode(7, 4).catch((e) => e)), 'EDVSBUSY', 'removing a node with endpoints bound in the DC: EDVSBUSY');
  a.bound.delete('7:4');
  tt.same((await a.reg.dcs.removeNode(7, 4)).nodes, [1, 2, 3], 'removeNode once it has none');

  // ---- directory: create-if-absent, names, conflicts
  a.reg.directory.localChanged([ep(1, 50, 3, 111, 'alpha'), ep(1, 51)]);
  await waitFor(() => (b.applied.get(1)?.length ?? 0) === 2, 10000, "b applies a's two endpoints");
  tt.same(b.applied.get(1), [ep(1, 50, 3, 111, 'alpha'), ep(1, 51)], 'with gen, pid and name');
  tt.match(await value('eps/1/50'), { node: 1, gen: 3, pid: 111, name: 'alpha' }, 'endpoint key /dvs/<ns>/eps/1/50');
  b.reg.directory.localChanged([ep(1, 50, 9, 222)]);
  await waitFor(() => b.reg.directory.conflicts().length === 1, 10000, "b's conflicting bind is reported");
  tt.same(b.reg.directory.conflicts(), [{ dc: 1, ep: 50, node: 1 }], 'conflicts() names the holder');
  tt.ok(b.logs.some((l) => l.level === 'warn' && /endpoint conflict/.test(l.msg)), 'and a warning is logged');
  tt.match(await value('eps/1/50'), { node: 1, gen: 3 }, "a's key is not overwritten");
  tt.same(a.applied.get(2) ?? [], [], 'a sees no endpoint of b');
  // The holder unbinds: b's pending bind is registered.
  a.reg.directory.localChanged([ep(1, 51)]);
  await waitFor(() => a.applied.get(2)?.some((e) => e.ep === 50) ?? false, 10000, "a applies b's endpoint 50");
  tt.same(b.reg.directory.conflicts(), [], 'the conflict is resolved');
  tt.match(await value('eps/1/50'), { node: 2, gen: 9 }, 'the key is now b\'s');
  // A rebind (new gen) on the same node: compare-and-swap.
  a.reg.directory.localChanged([ep(1, 51, 2)]);
  await waitFor(() => b.applied.get(1)?.[0]?.gen === 2, 10000, 'b sees the new generation');
  tt.same(b.applied.get(1), [ep(1, 51, 2)], 'rebind replaced the entry');

  // ---- etcd away: nothing is cleared, changes fail with EDVSNOTCONN; back: resync
  await etcd.stop();
  await waitFor(() => a.reg.session.state === 'down' && b.reg.session.state === 'down', 10000, 'both sessions down');
  tt.ok(a.logs.some((l) => l.level === 'error' && l.fields?.code === 'EDVSNOTCONN' && String(l.fields?.etcd).includes(etcd.address)), 'a logged EDVSNOTCONN naming etcd');
  const e = await a.reg.dcs.create(11, [1]).catch((err: unknown) => err);
  tt.equal(codeOf(e), 'EDVSNOTCONN', 'a DC change fails at once with EDVSNOTCONN');
  tt.match(String((e as Error).message), etcd.address, "the message names etcd's address");
  tt.same(b.applied.get(1), [ep(1, 51, 2)], "b keeps a's endpoints while etcd is away");
  tt.equal(stateIn(b, 1), 'alive', 'and a is still alive in its view');
  a.reg.directory.localChanged([ep(1, 51, 2), ep(1, 52)]);
  await sleep(2500);
  await etcd.start();
  await waitFor(() => a.reg.session.state === 'up' && b.reg.session.state === 'up', 15000, 'both sessions up again');
  await waitFor(() => b.applied.get(1)?.some((x) => x.ep === 52) ?? false, 10000, 'the bind made during the outage reaches b');
  tt.pass('after the restart the bind made during the outage is registered and seen');
  tt.equal(stateIn(b, 1), 'alive', 'a is alive in b\'s view');

  // ---- graceful leave vs. expiry
  const c = fakeNode(etcd.url, ns, 3);
  tt.teardown(() => c.reg.stopNow());
  await c.reg.start();
  c.reg.directory.localChanged([ep(2, 1)]);
  await waitFor(() => stateIn(a, 3) === 'alive' && (a.applied.get(3)?.length ?? 0) === 1, 10000, 'c joined and bound');
  await c.reg.stop();
  await waitFor(() => stateIn(a, 3) === 'left', 5000, "a shows c 'left'");
  tt.notOk(a.peers.has(3), 'a removed c as a transport peer');
  tt.same(a.applied.get(3) ?? [], [], "c's endpoints left a's directory");
  tt.match(await value('nodes/3'), { left: true }, 'a tombstone marks the leave');
  tt.equal(await value('eps/2/1'), null, "c's endpoint key is gone");
  const tStop = Date.now();
  b.reg.stopNow();  // no goodbye: its lease expires
  await waitFor(() => stateIn(a, 2) === 'dead', DEAD_BOUND_MS, "a shows b 'dead'");
  tt.pass(`a shows b 'dead' ${Date.now() - tStop} ms after b stopped renewing its lease (TTL 2 s)`);
  tt.same(a.applied.get(2) ?? [], [], "b's endpoints left a's directory");
  tt.ok(a.peers.has(2), 'the dead node stays a transport peer (it may come back)');
  tt.notOk(a.logs.some((l) => /handling a change failed/.test(l.msg)), 'no handler error logged');
});
