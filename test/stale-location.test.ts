// stale-location.test.ts — the data plane's part of the directory (native
// engine), with three embedded agents in this process:
//  - a sender whose directory is stale (it believes an endpoint lives on node
//    2, which only has a proxy for it: it is on node 3) is corrected by the
//    node it reached: node 2 passes calls, acknowledged sends and notifications
//    on to node 3 and the answers back, so the caller sees nothing;
//  - when node 2 loses node 3 (a simulated partition) while it holds such
//    calls, the caller gets EDVSNOTCONN, and traffic resumes after the heal;
//  - when the directory removes a remote endpoint while its node is up, the
//    proxy retires after a grace period: an answer already on its way still
//    reaches the caller (the directory, e.g. etcd, does not travel with the
//    data); a call nobody answers then fails with EDVSDSTDIED;
//  - endpoint names and DC bitmaps: a name is unique per DC on a node, a bind
//    or a send in a DC the node is not part of fails with EDVSNODCNODE, also
//    for a message arriving from another node.
import t from 'tap';
import { attach, startAgent, type Agent, type Endpoint } from '../lib/index.js';
import { silentLogger } from '../lib/agent/log.js';
import { codeOf, shmFiles, sleep, uniqueNs, within, type T } from './helpers.js';
import { engineOf, freeUdpPorts, retryWhile, until } from './cluster-helpers.js';

const DC = 1;


/** An engine counter (top level) or a transport counter (`transport.k`). */
function stat(a: Agent, k: string): number {
  const s = a.stats() as Record<string, unknown> & { transport?: Record<string, unknown> };
  return Number(s[k] ?? s.transport?.[k] ?? 0);
}


async function cluster(t: T, ns: string, n: number): Promise<Agent[]> {
  const ports = await freeUdpPorts(n);
  const agents: Agent[] = [];
  t.teardown(async () => {
    for (const a of agents) await a.stop();
  });
  for (let i = 0; i < n; i++) {
    const peers = ports.map((port, j) => ({ node: j + 1, host: '127.0.0.1', port })).filter((p) => p.node !== i + 1);
    agents.push(await startAgent({ node: i + 1, listen: { host: '127.0.0.1', port: ports[i] }, peers, namespace: ns, deadAfterMs: 1000 }, silentLogger));
  }
  for (const a of agents) await a.waitForPeers(undefined, 10000);
  return agents;
}

function serve(server: Endpoint, seen: { sends: number; notifies: number }): Promise<void> {
  return (async () => {
    for (;;) {
      let m;
      try {
        m = await server.receive();
      } catch {
        return;  // closed
      }
      if (m.kind === 'call') m.reply(Uint8Array.from(m.payload, (b) => (b + 1) & 0xff));
      else if (m.kind === 'send') seen.sends++;
      else if (m.kind === 'notify') seen.notifies++;
      m.release();
    }
  })();
}

t.test('a stale location is corrected by the node it reached, invisibly to the caller', async (tt) => {
  const ns = uniqueNs('stale');
  const [a1, a2, a3] = await cluster(tt, ns, 3);
  const n1 = attach({ node: 1, namespace: ns });
  const n3 = attach({ node: 3, namespace: ns });
  tt.teardown(() => {
    n1.detach();
    n3.detach();
  });
  const server = n3.bind(DC, 60, { name: 'kv' });
  const seen = { sends: 0, notifies: 0 };
  const serving = serve(server, seen);
  await until('node 1 and node 2 to learn endpoint 60', () => [a1, a2].every((a) => a.ps().some((e) => e.ep === 60 && e.where === 'remote' && e.node === 3)));
  const gen = engineOf(a2).endpoints().find((e) => e.ep === 60)!.gen;

  // Node 1's directory goes stale: it now believes the endpoint is on node 2.
  const e1 = engineOf(a1);
  e1.setRemote(3, new Uint32Array(0));
  e1.setRemote(2, Uint32Array.from([DC, 60, gen, process.pid]));
  await until('node 1 to apply the stale entry', () => a1.ps().some((e) => e.ep === 60 && e.node === 2));
  tt.same(a1.ps().filter((e) => e.ep === 60).map((e) => [e.where, e.node]), [['remote', 2]], 'node 1 has a stale proxy pointing at node 2');

  const client = n1.bind(DC, 61);
  const before = stat(a2, 'redirected');
  const replies = await within(
    Promise.all(Array.from({ length: 200 }, (_, i) => client.call(60, Uint8Array.from([i & 0xff]), { timeoutMs: 10000 }).then((r) => {
      const v = r.payload[0];
      r.release();
      return v;
    }))),
    20000,
    '200 calls through a stale location',
  );
  tt.same(replies, Array.from({ length: 200 }, (_, i) => (i + 1) & 0xff), '200 calls through the stale location, each answered correctly');
  for (let i = 0; i < 100; i++) await client.send(60, Uint8Array.from([i]), { timeoutMs: 10000 });
  client.notify(60, 1);
  await until('the server to receive 100 sends and the notification', () => seen.sends === 100 && seen.notifies === 1);
  tt.pass('100 acknowledged sends and a notification arrived through the stale location');
  await until('node 2 to count what it passed on', () => stat(a2, 'redirected') - before >= 301);
  tt.ok(stat(a2, 'redirected') - before >= 301, `node 2 passed ${stat(a2, 'redirected') - before} messages on to node 3`);
  tt.equal(stat(a1, 'notconn'), 0, 'no caller saw an error');

  // Node 2 loses node 3 while the caller goes through it: EDVSNOTCONN, not a hang.
  a2.setPartition([3]);
  a3.setPartition([2]);
  const code = await codeOf(client.call(60, Uint8Array.from([1]), { timeoutMs: 15000 }), 20000);
  tt.equal(code, 'EDVSNOTCONN', 'a call through the stale location fails with EDVSNOTCONN when node 2 loses node 3');
  await until('the stats to show the partition', () => stat(a2, 'partitionDropped') > 0 && stat(a3, 'partitionDropped') > 0);
  tt.ok(stat(a2, 'partitionDropped') > 0 && stat(a3, 'partitionDropped') > 0, 'the partition dropped datagrams both ways');
  a2.setPartition([]);
  a3.setPartition([]);
  await a2.waitForPeers([3], 15000);
  const again = await retryWhile(() => client.call(60, Uint8Array.from([7]), { timeoutMs: 5000 }), ['EDVSNOTCONN', 'EDVSNOTBIND'], 15000, 'a call after the heal');
  tt.equal(again.payload[0], 8, 'after the heal the call goes through again');
  again.release();

  server.close();
  await serving;
  client.close();
  n1.detach();
  n3.detach();
  for (const a of [a1, a2, a3]) await a.stop();
  await sleep(50);
  tt.same(shmFiles(ns), [], 'no segment left');
});

t.test('a proxy the directory removed retires after a grace period: answers on their way still arrive', async (tt) => {
  const ns = uniqueNs('retire');
  const [a1, a2] = await cluster(tt, ns, 2);
  const n1 = attach({ node: 1, namespace: ns });
  const n2 = attach({ node: 2, namespace: ns });
  tt.teardown(() => {
    n1.detach();
    n2.detach();
  });
  const server = n2.bind(DC, 70);
  await until('node 1 to learn endpoint 70', () => a1.ps().some((e) => e.ep === 70 && e.where === 'remote'));
  const gen = engineOf(a2).endpoints().find((e) => e.ep === 70)!.gen;
  const client = n1.bind(DC, 71);

  // A call the server holds; meanwhile node 1's directory says the endpoint is gone; then the server answers.
  const answered = client.call(70, Uint8Array.from([5]), { timeoutMs: 10000 });
  const m = await server.receive({ timeoutMs: 5000 });
  engineOf(a1).setRemote(2, new Uint32Array(0));
  await sleep(50);
  tt.ok(a1.ps().some((e) => e.ep === 70), 'the proxy is still there during the grace period');
  m.reply(Uint8Array.from([6]));
  m.release();
  const r = await within(answered, 10000, 'the held call');
  tt.equal(r.payload[0], 6, 'the answer sent after the directory removal reaches the caller');
  r.release();
  await until('the proxy to retire', () => !a1.ps().some((e) => e.ep === 70), 5000);
  tt.pass('then the proxy retires');

  // Again, but nobody answers: the caller gets EDVSDSTDIED when the proxy retires.
  engineOf(a1).setRemote(2, Uint32Array.from([DC, 70, gen, process.pid]));
  await until('node 1 to have the proxy again', () => a1.ps().some((e) => e.ep === 70));
  const unanswered = client.call(70, Uint8Array.from([1]), { timeoutMs: 10000 });
  const held = await server.receive({ timeoutMs: 5000 });
  engineOf(a1).setRemote(2, new Uint32Array(0));
  tt.equal(await codeOf(unanswered, 10000), 'EDVSDSTDIED', 'a call nobody answers fails with EDVSDSTDIED once the proxy retires');
  held.release();

  server.close();
  client.close();
  n1.detach();
  n2.detach();
  await a1.stop();
  await a2.stop();
  await sleep(50);
  tt.same(shmFiles(ns), [], 'no segment left');
});

t.test('names are unique per DC on a node; DC bitmaps gate binds, sends and arriving messages', async (tt) => {
  const ns = uniqueNs('dcname');
  const [a1, a2] = await cluster(tt, ns, 2);
  const n1 = attach({ node: 1, namespace: ns });
  const n2 = attach({ node: 2, namespace: ns });
  tt.teardown(() => {
    n1.detach();
    n2.detach();
  });

  const kv = n1.bind(DC, 10, { name: 'kv' });
  tt.equal(await codeOf(() => n1.bind(DC, 11, { name: 'kv' })), 'EDVSSLOTUSED', 'a second endpoint with the same name in the DC: EDVSSLOTUSED');
  const other = n1.bind(DC + 1, 10, { name: 'kv' });
  tt.pass('the same name in another DC is fine');
  tt.equal(await codeOf(() => n1.bind(DC, 12, { name: 'x'.repeat(32) })), 'EDVSINVAL', 'a 32-byte name: EDVSINVAL');
  tt.equal(await codeOf(() => n1.bind(DC, 12, { name: '' })), 'EDVSINVAL', 'an empty name: EDVSINVAL');
  tt.equal(await codeOf(() => n1.bind(DC, 12, { name: 'a\0b' })), 'EDVSINVAL', 'a name with NUL: EDVSINVAL');
  const auto = n1.bind(DC, null, { name: 'client-1' });
  tt.equal(await codeOf(() => n1.bind(DC, null, { name: 'client-1' })), 'EDVSSLOTUSED', 'an automatic number with a taken name: EDVSSLOTUSED (not a scan of the range)');
  const names = engineOf(a1).endpoints().filter((e) => !e.remote).map((e) => [e.dc, e.ep, e.name]).sort();
  tt.same(names, [[DC, 10, 'kv'], [DC, auto.ep, 'client-1'], [DC + 1, 10, 'kv']].sort(), 'the engine lists each endpoint with its name');
  kv.close();
  const kv2 = n1.bind(DC, 11, { name: 'kv' });
  tt.pass('after the unbind the name is free again');

  // DC 5 exists and node 1 is not in it; DC 6 exists with node 1; other DCs are open.
  engineOf(a1).setDcs(Uint32Array.from([5, 6]), Uint32Array.from([6]));
  tt.equal(await codeOf(() => n1.bind(5, 1)), 'EDVSNODCNODE', 'bind in a DC this node is not part of: EDVSNODCNODE');
  const in6 = n1.bind(6, 1);
  const open = n1.bind(7, 1);
  tt.pass('bind in a DC with this node, and in a DC not in the table, succeed');
  // Node 1 leaves DC 6: its endpoint there can no longer send.
  engineOf(a1).setDcs(Uint32Array.from([5, 6]), Uint32Array.from([]));
  tt.equal(await codeOf(in6.send(1, 'x', { timeoutMs: 1000 })), 'EDVSNODCNODE', 'send from a DC the node left: EDVSNODCNODE');
  tt.equal(await codeOf(() => in6.notify(1, 1)), 'EDVSNODCNODE', 'notify from a DC the node left: EDVSNODCNODE');
  engineOf(a1).setDcs(Uint32Array.from([]), Uint32Array.from([]));
  const back = n1.bind(5, 1);
  tt.pass('with an empty table every DC is open again');

  // A message from node 2 for DC 9 on node 1, after node 1 left DC 9: the engine answers EDVSNODCNODE.
  const target = n1.bind(9, 40);
  const sender = n2.bind(9, 41);
  await until('node 2 to learn endpoint 40', () => a2.ps().some((e) => e.dc === 9 && e.ep === 40 && e.where === 'remote'));
  await sender.send(40, 'ok', { timeoutMs: 5000 });
  const m = await target.receive({ timeoutMs: 5000 });
  tt.equal(m.text(), 'ok', 'a message arrives while node 1 is in DC 9');
  m.release();
  engineOf(a1).setDcs(Uint32Array.from([9]), Uint32Array.from([]));
  tt.equal(await codeOf(sender.send(40, 'no', { timeoutMs: 5000 })), 'EDVSNODCNODE', 'a remote send into a DC the destination node left: EDVSNODCNODE from that node');
  tt.equal(await codeOf(sender.call(40, 'no', { timeoutMs: 5000 })), 'EDVSNODCNODE', 'a remote call likewise');

  for (const e of [other, auto, kv2, in6, open, back, target, sender]) e.close();
  n1.detach();
  n2.detach();
  await a1.stop();
  await a2.stop();
  await sleep(50);
  tt.same(shmFiles(ns), [], 'no segment left');
});
