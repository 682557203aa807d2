// cluster-backpressure.test.ts — a receiver on node 2 that stops reading
// back-pressures a sender on node 1 through both agents without losing
// anything: while it pauses, the sender's sends stop resolving (only as many
// as the destination mailbox holds were acknowledged); when it reads again,
// every message arrives exactly once and in order.
import t from 'tap';
import { shmFiles, sleep, spawnFixture, uniqueNs, within } from './helpers.js';
import { startCluster, waitRemote } from './cluster-helpers.js';

const DC = 1;
// Default arena sizing (docs/DESIGN.md): 1024 inbox cells per endpoint; the
// receiving process may also have taken one batch (up to 256 descriptors,
// lib/native.ts layout.maxBatch) into its process before it stopped reading.
const INBOX_CELLS = 1024;
const RECV_BATCH = 256;

t.test('a paused remote receiver back-pressures the sender; nothing is lost', async (tt) => {
  const ns = uniqueNs('cl-bp');
  const [a1, a2] = await startCluster(tt, ns, [1, 2]);
  const N = 20000, PAUSE_AFTER = 2000;
  const rx = spawnFixture(tt, 'cluster-receiver', [ns, 2, DC, 10, N, PAUSE_AFTER]);
  tt.equal(await within(rx.line(), 30000, 'receiver ready'), 'ready');
  await waitRemote(a1, DC, 10);
  // All N sends outstanding at once (window N): only back-pressure can hold them.
  const tx = spawnFixture(tt, 'cluster-sender', [ns, 1, DC, 11, 10, N, 16, N]);
  tt.equal(await within(tx.line(), 30000, 'sender ready'), 'ready');
  tx.send('go');
  tt.equal(await within(rx.line(), 30000, 'the receiver to pause'), 'paused');

  await sleep(1500);
  tx.send('count');
  const c1 = await within(tx.json<{ resolved: number; issued: number }>(), 10000, 'sender count');
  await sleep(1500);
  tx.send('count');
  const c2 = await within(tx.json<{ resolved: number; issued: number }>(), 10000, 'sender count');
  tt.equal(c1.issued, N, 'the sender issued every send (they are all outstanding)');
  tt.ok(c1.resolved >= PAUSE_AFTER, `${c1.resolved} sends resolved: at least the ${PAUSE_AFTER} read before the pause`);
  tt.ok(
    c1.resolved <= PAUSE_AFTER + INBOX_CELLS + RECV_BATCH,
    `only ${c1.resolved - PAUSE_AFTER} acknowledged while paused (bound: mailbox ${INBOX_CELLS} + one receive batch ${RECV_BATCH})`,
  );
  tt.equal(c2.resolved, c1.resolved, 'no progress while the receiver does not read');

  rx.send('resume');
  const r = await within(rx.json<{ received: number; perSrc: Record<string, number>; errors: string[] }>(60000), 60000, 'the receiver');
  tt.same(r.errors, [], 'no gap, duplicate or reordering');
  tt.equal(r.received, N);
  tt.same(r.perSrc, { 11: N });
  const s = await within(tx.json<{ sent: number; resolved: number; errors: string[] }>(60000), 60000, 'the sender');
  tt.same(s, { sent: N, resolved: N, errors: [] }, 'every send resolved after the receiver resumed');
  for (const c of [tx, rx]) tt.same(await c.exit(), { code: 0, signal: null }, `${c.name} exited cleanly`);
  tt.same(await a1.stop(), { code: 0, signal: null });
  tt.same(await a2.stop(), { code: 0, signal: null });
  tt.same(shmFiles(ns), [], 'no segment left');
});
