// cluster-delivery.test.ts — exactly-once, in-order delivery between two node
// agents (real `dvs agent` processes on 127.0.0.1) while the transport drops,
// duplicates and reorders datagrams (agent --fault): 100k one-way messages,
// concurrent calls from several processes, and 1 MiB messages under loss.
import t from 'tap';
import { shmFiles, spawnFixture, uniqueNs, within } from './helpers.js';
import { startCluster, waitRemote, type AgentProc, type AgentStats } from './cluster-helpers.js';

const DC = 1;
const used: string[] = [];

interface SenderResult {
  sent: number;
  resolved: number;
  errors: string[];
}
interface ReceiverResult {
  received: number;
  perSrc: Record<string, number>;
  bytes: number;
  errors: string[];
}
interface CallerResult {
  ok: number;
  bad: number;
  errors: string[];
  maxInFlight: number;
}

const peerOf = (s: AgentStats, node: number) => s.peers.find((p) => p.node === node);

/** The fault injection really happened on `a`, and the link to `peer` repaired it by retransmitting. */
async function assertFaultsRepaired(tt: Tap, a: AgentProc, peer: number, opts: { dup: boolean }): Promise<void> {
  const s = await a.stats();
  const tr = s.transport;
  tt.ok(tr.faultDropped > 0, `node ${a.node}: the fault injector dropped ${tr.faultDropped} datagrams`);
  if (opts.dup) {
    tt.ok(tr.faultDuplicated > 0, `node ${a.node}: duplicated ${tr.faultDuplicated}`);
    tt.ok(tr.faultReordered > 0, `node ${a.node}: reordered ${tr.faultReordered}`);
  }
  const p = peerOf(s, peer);
  tt.ok(p, `node ${a.node} has stats for peer ${peer}`);
  if (!p) return;
  // 10 % (5 %) loss on each side: far more than 2 % of the datagrams sent must have been retransmitted.
  tt.ok(p.retransmits > 0.02 * p.dgramsSent, `node ${a.node} -> ${peer}: ${p.retransmits} retransmits of ${p.dgramsSent} datagrams`);
}

interface Tap {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  ok(v: any, ...rest: any[]): unknown;
}

t.test('100k one-way messages and concurrent calls, node 1 -> node 2, under 10% loss, 5% dup, 5% reorder', async (tt) => {
  const ns = uniqueNs('cl-deliv');
  used.push(ns);
  const fault = 'loss=0.1,dup=0.05,reorder=0.05';
  const [a1, a2] = await startCluster(tt, ns, [1, 2], { fault });

  const N = 100000;
  const rx = spawnFixture(tt, 'cluster-receiver', [ns, 2, DC, 10, N]);
  const srv = spawnFixture(tt, 'server', [ns, 2, DC, 20, 'echo']);
  tt.equal(await within(rx.line(), 30000, 'receiver ready'), 'ready');
  tt.equal(await within(srv.line(), 30000, 'server ready'), 'ready');
  await waitRemote(a1, DC, 10);
  await waitRemote(a1, DC, 20);

  const tx = spawnFixture(tt, 'cluster-sender', [ns, 1, DC, 11, 10, N, 16, 1024]);
  // callers: [calls, window, size]; the last one's requests span several datagrams.
  const plan: [number, number, number][] = [
    [2000, 32, 16],
    [2000, 64, 200],
    [500, 16, 5000],
  ];
  const callers = plan.map(([calls, window, size], i) => spawnFixture(tt, 'caller', [ns, 1, DC, 30 + i, 20, calls, window, size]));
  tt.equal(await within(tx.line(), 30000, 'sender ready'), 'ready');
  for (const c of callers) tt.equal(await within(c.line(), 30000, 'caller ready'), 'ready');
  tx.send('go');
  for (const c of callers) c.send('go');

  const cr = await within(Promise.all(callers.map((c) => c.json<CallerResult>(120000))), 120000, 'the callers');
  cr.forEach((r, i) => {
    tt.same(r.errors, [], `caller ${i}: no errors`);
    tt.equal(r.ok, plan[i][0], `caller ${i}: every one of ${plan[i][0]} replies matched its request`);
    tt.equal(r.bad, 0, `caller ${i}: no bad reply`);
    tt.ok(r.maxInFlight > 1, `caller ${i}: ${r.maxInFlight} calls were in flight at once`);
  });
  const s = await within(tx.json<SenderResult>(120000), 120000, 'the sender');
  tt.same(s, { sent: N, resolved: N, errors: [] }, 'every send was acknowledged by node 2');
  const r = await within(rx.json<ReceiverResult>(60000), 60000, 'the receiver');
  tt.same(r.errors, [], 'no gap, duplicate, reordering or corruption');
  tt.equal(r.received, N, `node 2 received ${N} messages`);
  tt.same(r.perSrc, { 11: N }, 'all of them from the sender, sequence 0..N-1');
  for (const c of [tx, rx, ...callers]) tt.same(await c.exit(), { code: 0, signal: null }, `${c.name} exited cleanly`);

  await assertFaultsRepaired(tt, a1, 2, { dup: true });
  await assertFaultsRepaired(tt, a2, 1, { dup: true });
  const s2 = await a2.stats();
  tt.ok((peerOf(s2, 1)?.dupDropped ?? 0) > 0, `node 2 dropped ${peerOf(s2, 1)?.dupDropped} duplicate datagrams from node 1`);

  srv.kill('SIGKILL');
  await srv.exit();
  tt.same(await a1.stop(), { code: 0, signal: null }, 'agent 1 stopped cleanly');
  tt.same(await a2.stop(), { code: 0, signal: null }, 'agent 2 stopped cleanly');
  tt.same(shmFiles(ns), [], 'no segment left');
});

t.test('1 MiB messages under 5% loss, byte-exact', async (tt) => {
  const ns = uniqueNs('cl-big');
  used.push(ns);
  const [a1, a2] = await startCluster(tt, ns, [1, 2], { fault: 'loss=0.05' });
  const N = 24, SIZE = 1 << 20;
  const rx = spawnFixture(tt, 'cluster-receiver', [ns, 2, DC, 10, N]);
  tt.equal(await within(rx.line(), 30000, 'receiver ready'), 'ready');
  await waitRemote(a1, DC, 10);
  const tx = spawnFixture(tt, 'cluster-sender', [ns, 1, DC, 11, 10, N, SIZE, 4]);
  tt.equal(await within(tx.line(), 30000, 'sender ready'), 'ready');
  tx.send('go');
  const s = await within(tx.json<SenderResult>(90000), 90000, 'the sender');
  tt.same(s, { sent: N, resolved: N, errors: [] }, 'every 1 MiB send was acknowledged');
  const r = await within(rx.json<ReceiverResult>(30000), 30000, 'the receiver');
  tt.same(r.errors, [], 'every payload byte-exact (length and checksum), in order, once');
  tt.equal(r.received, N);
  tt.equal(r.bytes, N * SIZE, `${N} MiB received`);
  tt.same(r.perSrc, { 11: N });
  for (const c of [tx, rx]) tt.same(await c.exit(), { code: 0, signal: null }, `${c.name} exited cleanly`);
  await assertFaultsRepaired(tt, a1, 2, { dup: false });
  tt.same(await a1.stop(), { code: 0, signal: null });
  tt.same(await a2.stop(), { code: 0, signal: null });
  tt.same(shmFiles(ns), [], 'no segment left');
});

t.test('nothing left behind', async (tt) => {
  for (const ns of used) tt.same(shmFiles(ns), [], `no /dev/shm/dvs.${ns}.*`);
});
