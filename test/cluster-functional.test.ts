// cluster-functional.test.ts — the API across two nodes (real `dvs agent`
// processes): remote send / call / reply / notify / receive from JS in both
// directions, sends to endpoints bound nowhere or closed, callers of a remote
// server that is killed, and `dvs ps --json` listing local and remote endpoints.
import t from 'tap';
import { attach, type Endpoint, type Message } from '../lib/index.js';
import { shmFiles, sleep, spawnFixture, uniqueNs, within, type T } from './helpers.js';
import { runCli, startCluster, waitRemote, type AgentProc } from './cluster-helpers.js';

const DC = 1;
const used: string[] = [];
const codeOf = (e: unknown): string => (e as { code?: string })?.code ?? String(e);

/** Polls `f` until it fails with `want` (bounded); any success is a failure (returned as 'resolved'). */
async function untilCode(f: () => Promise<unknown>, want: string, allowed: string[], ms = 10000): Promise<string[]> {
  const seen: string[] = [];
  const deadline = Date.now() + ms;
  for (;;) {
    let code: string;
    try {
      await f();
      code = 'resolved';
    } catch (e) {
      code = codeOf(e);
    }
    if (!seen.includes(code)) seen.push(code);
    if (code === want || !allowed.includes(code) || Date.now() > deadline) return seen;
    await sleep(25);
  }
}

async function cluster(tt: T, name: string): Promise<[AgentProc, AgentProc, string]> {
  const ns = uniqueNs(name);
  used.push(ns);
  const [a1, a2] = await startCluster(tt, ns, [1, 2]);
  return [a1, a2, ns];
}

t.test('remote send, call, reply, notify and receive, both directions', async (tt) => {
  const [a1, a2, ns] = await cluster(tt, 'cl-fn');
  const n1 = attach({ node: 1, namespace: ns });
  tt.teardown(() => n1.detach());
  const n2 = attach({ node: 2, namespace: ns });
  tt.teardown(() => n2.detach());
  const e1 = n1.bind(DC, 100), e2 = n2.bind(DC, 200);
  await waitRemote(a1, DC, 200);
  await waitRemote(a2, DC, 100);

  const recv = (e: Endpoint): Promise<Message> => within(e.receive({ timeoutMs: 10000 }), 15000, `a message on ${e.ep}`);
  for (const [from, to, fromNode] of [[e1, e2, 1], [e2, e1, 2]] as const) {
    const dir = `node ${fromNode} -> node ${3 - fromNode}`;
    // one-way
    await within(from.send(to.ep, `hello from ${fromNode}`), 10000, 'send');
    const m = await recv(to);
    tt.same([m.kind, m.src, m.srcNode, m.text()], ['send', from.ep, fromNode, `hello from ${fromNode}`], `${dir}: send arrives with its source`);
    m.release();
    const big = Uint8Array.from({ length: 100000 }, (_, i) => (i * 13 + fromNode) & 0xff);
    await within(from.send(to.ep, big), 10000, 'send');
    const mb = await recv(to);
    tt.ok(Buffer.from(mb.payload).equals(Buffer.from(big)), `${dir}: a 100 kB payload arrives byte-exact`);
    mb.release();
    // call / reply
    const p = from.call(to.ep, Uint8Array.from([1, 2, 3]), { timeoutMs: 10000 });
    const c = await recv(to);
    tt.same([c.kind, c.src, c.srcNode, [...c.payload]], ['call', from.ep, fromNode, [1, 2, 3]], `${dir}: the call arrives`);
    c.reply(`re:${[...c.payload].join()}`);
    c.release();
    const r = await within(p, 15000, 'reply');
    tt.same([r.kind, r.src, r.text()], ['reply', to.ep, 're:1,2,3'], `${dir}: the caller gets the reply`);
    r.release();
    // an error reply
    const pe = from.call(to.ep, 'x', { timeoutMs: 10000 });
    const ce = await recv(to);
    ce.reply(new Uint8Array(0));
    ce.release();
    const re = await within(pe, 15000, 'empty reply');
    tt.equal(re.length, 0, `${dir}: an empty reply`);
    re.release();
    // notify
    from.notify(to.ep, 0b101);
    const nm = await recv(to);
    tt.same([nm.kind, nm.src, nm.bits], ['notify', from.ep, 0b101], `${dir}: the notification arrives with its bits`);
    nm.release();
    // selective receive: a message from another source stays queued
    const other = (fromNode === 1 ? n1 : n2).bind(DC, 150 + fromNode);
    await waitRemote(fromNode === 1 ? a2 : a1, DC, 150 + fromNode);
    await other.send(to.ep, 'other');
    await from.send(to.ep, 'mine');
    const sel = await within(to.receive({ from: from.ep, timeoutMs: 10000 }), 15000, 'selective receive');
    tt.equal(sel.text(), 'mine', `${dir}: receive({ from }) picks the message of that source`);
    sel.release();
    const rest = await recv(to);
    tt.same([rest.src, rest.text()], [other.ep, 'other'], `${dir}: the other one stayed queued`);
    rest.release();
    other.close();
  }

  // Ordering of sends with calls interleaved (one FIFO per source).
  const got: string[] = [];
  const reader = (async () => {
    while (got.length < 200) {
      const m = await e2.receive({ timeoutMs: 10000 });
      got.push(`${m.kind}:${m.text()}`);
      if (m.kind === 'call') m.reply('ok');
      m.release();
    }
  })();
  const ops: Promise<unknown>[] = [];
  for (let i = 0; i < 100; i++) {
    ops.push(e1.send(200, `s${i}`));
    ops.push(e1.call(200, `c${i}`, { timeoutMs: 10000 }).then((r) => r.release()));
  }
  await within(Promise.all([...ops, reader]), 20000, 'interleaved sends and calls');
  tt.same(got, Array.from({ length: 100 }, (_, i) => [`send:s${i}`, `call:c${i}`]).flat(), 'sends and calls arrive in the order they were made');

  // Endpoints bound nowhere, and a remote endpoint that is closed.
  await tt.rejects(e1.send(999, 'x'), { code: 'EDVSNOTBIND' }, 'send to an endpoint bound nowhere: EDVSNOTBIND');
  await tt.rejects(e1.call(999, 'x', { timeoutMs: 5000 }), { code: 'EDVSNOTBIND' }, 'call to an endpoint bound nowhere: EDVSNOTBIND');
  e2.close();
  const seen = await untilCode(() => e1.send(200, 'after close', { timeoutMs: 5000 }), 'EDVSNOTBIND', ['EDVSDSTDIED', 'EDVSNOTBIND']);
  tt.equal(seen[seen.length - 1], 'EDVSNOTBIND', `a send to the closed remote endpoint fails (${seen.join(', ')}), ending with EDVSNOTBIND`);
  tt.notOk(seen.includes('resolved'), 'no send to the closed endpoint succeeded');

  n1.detach();
  n2.detach();
  tt.same(await a1.stop(), { code: 0, signal: null });
  tt.same(await a2.stop(), { code: 0, signal: null });
  tt.same(shmFiles(ns), [], 'no segment left');
});

t.test('callers waiting on a remote server that is killed get EDVSDSTDIED', async (tt) => {
  const [a1, a2, ns] = await cluster(tt, 'cl-died');
  const srv = spawnFixture(tt, 'server', [ns, 2, DC, 300, 'hold']);
  tt.equal(await within(srv.line(), 30000, 'server ready'), 'ready');
  await waitRemote(a1, DC, 300);
  const n1 = attach({ node: 1, namespace: ns });
  tt.teardown(() => n1.detach());
  const me = n1.bind(DC, 301);
  const calls = [0, 1, 2].map((i) => me.call(300, `q${i}`).then(() => 'resolved', codeOf));
  for (let i = 1; i <= 3; i++) tt.same(await within(srv.json(), 10000, 'the server got a call'), { got: i, kind: 'call' });
  srv.kill('SIGKILL');
  const results = await within(Promise.all(calls), 10000, 'the callers to be told');
  tt.same(results, ['EDVSDSTDIED', 'EDVSDSTDIED', 'EDVSDSTDIED'], 'every waiting remote caller got EDVSDSTDIED');
  await srv.exit();
  const seen = await untilCode(() => me.call(300, 'late', { timeoutMs: 5000 }), 'EDVSNOTBIND', ['EDVSDSTDIED', 'EDVSNOTBIND']);
  tt.equal(seen[seen.length - 1], 'EDVSNOTBIND', `then new calls fail (${seen.join(', ')}), ending with EDVSNOTBIND once node 2 announced it`);
  tt.same(await a2.request('status').then(() => 'up'), 'up', 'agent 2 is still up');
  n1.detach();
  tt.same(await a1.stop(), { code: 0, signal: null });
  tt.same(await a2.stop(), { code: 0, signal: null });
  tt.same(shmFiles(ns), [], 'no segment left');
});

t.test('dvs ps --json lists local and remote endpoints with node and pid', async (tt) => {
  const [a1, a2, ns] = await cluster(tt, 'cl-ps');
  const s1 = spawnFixture(tt, 'server', [ns, 1, DC, 401, 'idle']);
  const s2 = spawnFixture(tt, 'server', [ns, 2, DC, 400, 'idle']);
  for (const s of [s1, s2]) tt.equal(await within(s.line(), 30000, 'server ready'), 'ready');
  await waitRemote(a1, DC, 400);
  await waitRemote(a2, DC, 401);
  for (const [node, local, remote] of [[1, s1, s2], [2, s2, s1]] as const) {
    const r = await runCli(tt, ['ps', '--node', String(node), '--namespace', ns, '--json']);
    tt.equal(r.code, 0, `dvs ps --node ${node} exits 0`);
    let out: { node: number; namespace: string; endpoints: { dc: number; ep: number; where: string; node: number; pid: number }[] } | null = null;
    try {
      out = JSON.parse(r.stdout);
    } catch {
      tt.fail(`dvs ps printed no JSON: ${r.stdout} ${r.stderr}`);
    }
    if (!out) continue;
    tt.equal(out.node, node);
    tt.equal(out.namespace, ns);
    const find = (ep: number) => out!.endpoints.find((e) => e.dc === DC && e.ep === ep);
    const localEp = node === 1 ? 401 : 400, remoteEp = node === 1 ? 400 : 401;
    tt.same(find(localEp) && { where: find(localEp)!.where, node: find(localEp)!.node, pid: find(localEp)!.pid }, { where: 'local', node, pid: local.pid }, `node ${node}: its local endpoint ${localEp} with its pid`);
    tt.same(find(remoteEp) && { where: find(remoteEp)!.where, node: find(remoteEp)!.node, pid: find(remoteEp)!.pid }, { where: 'remote', node: 3 - node, pid: remote.pid }, `node ${node}: the remote endpoint ${remoteEp} with its node and pid`);
  }
  s1.kill('SIGKILL');
  s2.kill('SIGKILL');
  await s1.exit();
  await s2.exit();
  tt.same(await a1.stop(), { code: 0, signal: null });
  tt.same(await a2.stop(), { code: 0, signal: null });
  tt.same(shmFiles(ns), [], 'no segment left');
});

t.test('nothing left behind', async (tt) => {
  for (const ns of used) tt.same(shmFiles(ns), [], `no /dev/shm/dvs.${ns}.*`);
});
