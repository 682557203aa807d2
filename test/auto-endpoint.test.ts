// auto-endpoint.test.ts — bind(dc) without a number: a free number in the
// node's own range, distinct per node, usable across nodes like any other.
import t from 'tap';
import { AUTO_EP_BASE, AUTO_EP_PER_NODE, attach, startAgent } from '../lib/index.js';
import { freeUdpPorts, retryWhile } from './cluster-helpers.js';
import { shmFiles, uniqueNs } from './helpers.js';

t.test('numbers come from the node\'s range, skip taken ones and are reused after close', async (t) => {
  const ns = uniqueNs('auto');
  const node = attach({ node: 3, namespace: ns });
  t.teardown(() => node.detach());
  const base = AUTO_EP_BASE + 3 * AUTO_EP_PER_NODE;
  const taken = node.bind(1, base + 1);  // an explicit bind inside the range is skipped
  const a = node.bind(1);
  const b = node.bind(1);
  const c = node.bind(1);
  t.same([a.ep, b.ep, c.ep], [base, base + 2, base + 3], 'first free numbers, in order, skipping the taken one');
  t.equal(a.dc, 1);
  const other = node.bind(2);
  t.equal(other.ep, base + 4, 'the next number in another DC (the counter is per node)');
  a.close();
  const ids = new Set<number>();
  for (let i = 0; i < 5; i++) ids.add(node.bind(1).ep);
  t.equal(ids.size, 5, 'five more distinct numbers');
  for (const e of ids) t.ok(e >= base && e < base + AUTO_EP_PER_NODE, `${e} is in node 3's range`);
  t.throws(() => node.bind(4096), { code: 'EDVSBADDCID' }, 'bad DC still refused');
  taken.close();
  b.close();
  c.close();
  other.close();
  node.detach();
  t.same(shmFiles(ns), [], 'nothing left in /dev/shm');
});

t.test('two nodes pick distinct numbers and an automatic endpoint is callable from the other node', async (t) => {
  const ns = uniqueNs('auto-cluster');
  const [p1, p2] = await freeUdpPorts(2);
  const a1 = await startAgent({ node: 1, namespace: ns, listen: { host: '127.0.0.1', port: p1 }, peers: [{ node: 2, host: '127.0.0.1', port: p2 }], logLevel: 'error' });
  const a2 = await startAgent({ node: 2, namespace: ns, listen: { host: '127.0.0.1', port: p2 }, peers: [{ node: 1, host: '127.0.0.1', port: p1 }], logLevel: 'error' });
  t.teardown(async () => {
    await a1.stop();
    await a2.stop();
  });
  await a1.waitForPeers();
  await a2.waitForPeers();
  const n1 = attach({ node: 1, namespace: ns });
  const n2 = attach({ node: 2, namespace: ns });
  const client = n1.bind(5);
  const server = n2.bind(5);
  t.not(client.ep, server.ep, 'distinct numbers on distinct nodes');
  t.equal(server.ep, AUTO_EP_BASE + 2 * AUTO_EP_PER_NODE, "node 2's first automatic number");
  const serving = (async () => {
    for await (const m of server) if (m.kind === 'call') m.reply(`echo ${m.text()}`);
  })();
  const reply = await retryWhile(() => client.call(server.ep, 'hi', { timeoutMs: 2000 }), ['EDVSNOTBIND'], 10000, 'first call');
  t.equal(reply.text(), 'echo hi', 'the automatic endpoint answers across nodes');
  reply.release();
  server.close();
  await serving.catch(() => {});
  n1.detach();
  n2.detach();
  await a1.stop();
  await a2.stop();
  t.same(shmFiles(ns), [], 'nothing left in /dev/shm');
});
