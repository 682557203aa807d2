// order.test.ts — exactly-once, per-sender FIFO delivery between processes,
// and back-pressure (a full inbox or arena makes senders wait, never lose).
import t from 'tap';
import { attach, type Endpoint } from '../lib/index.js';
import { assertNoShm, spawnFixture, tick, uniqueNs, within, type Child, type T } from './helpers.js';

const ns = uniqueNs('order');
const DC = 1;

interface RecvResult {
  received: number;
  perSrc: Record<string, number>;
  errors: string[];
}

/** Waits for "ready" from the senders, then says "go" to them. */
async function startAll(senders: Child[]): Promise<void> {
  for (const s of senders) await within(s.expect('ready'), 30000, 'sender ready');
  for (const s of senders) s.send('go');
}

async function assertClean(tt: T & { equal: (...a: unknown[]) => boolean }, c: Child, what: string): Promise<void> {
  const e = await c.exit(30000);
  tt.same(e, { code: 0, signal: null }, `${what} exited cleanly${c.stderr ? ': ' + c.stderr.trim() : ''}`);
}

t.test('1,000,000 messages between two processes: each exactly once, in order', async (tt) => {
  const N = 1_000_000;
  // Async on both sides: for-await on the receiver, trySend + await send() on the sender.
  const receiver = spawnFixture(tt, 'receiver', [ns, 0, DC, 1, N, 'iter']);
  await within(receiver.expect('ready'), 30000, 'receiver ready');
  const sender = spawnFixture(tt, 'sender', [ns, 0, DC, 2, 1, N, 'async', 16]);
  await startAll([sender]);
  const t0 = Date.now();
  const r = await within(receiver.json<RecvResult>(), 120000, 'all messages to arrive');
  tt.comment(`${N} messages in ${Date.now() - t0} ms`);
  tt.equal(r.received, N);
  tt.same(r.errors, [], 'no gap, duplicate or reordering');
  tt.same(r.perSrc, { 2: N }, 'the last sequence number seen was N - 1');
  tt.same(await sender.json(), { sent: N });
  await assertClean(tt as never, sender, 'sender');
  await assertClean(tt as never, receiver, 'receiver');
});

t.test('zero-copy sender, blocking receiver', async (tt) => {
  const N = 100_000;
  const receiver = spawnFixture(tt, 'receiver', [ns, 0, DC, 3, N, 'sync']);
  await within(receiver.expect('ready'), 30000, 'receiver ready');
  const sender = spawnFixture(tt, 'sender', [ns, 0, DC, 4, 3, N, 'alloc', 300]);
  await startAll([sender]);
  const r = await within(receiver.json<RecvResult>(), 120000, 'all messages to arrive');
  tt.equal(r.received, N);
  tt.same(r.errors, []);
  tt.same(r.perSrc, { 4: N });
  tt.same(await sender.json(), { sent: N });
  await assertClean(tt as never, sender, 'sender');
  await assertClean(tt as never, receiver, 'receiver');
});

t.test('4 sender processes -> 1 receiver: per-sender order, none lost or duplicated', async (tt) => {
  const N = 100_000;
  const modes = ['async', 'await', 'sync', 'alloc'];
  const receiver = spawnFixture(tt, 'receiver', [ns, 0, DC, 10, N * modes.length, 'receive']);
  await within(receiver.expect('ready'), 30000, 'receiver ready');
  const senders = modes.map((mode, i) => spawnFixture(tt, 'sender', [ns, 0, DC, 11 + i, 10, N, mode, 8 + i * 100]));
  await startAll(senders);
  const r = await within(receiver.json<RecvResult>(), 150000, 'all messages to arrive');
  tt.equal(r.received, N * modes.length, 'total');
  tt.same(r.errors, [], 'every sender in order, no gap or duplicate');
  tt.same(r.perSrc, { 11: N, 12: N, 13: N, 14: N }, 'each sender complete');
  for (const [i, s] of senders.entries()) {
    tt.same(await s.json(), { sent: N });
    await assertClean(tt as never, s, `sender ${modes[i]}`);
  }
  await assertClean(tt as never, receiver, 'receiver');
});

/** Reads `n` messages and returns their texts. */
async function drain(ep: Endpoint, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const m = await within(ep.receive({ timeoutMs: 10000 }), 20000, `message ${i} of ${n}`);
    out.push(m.text());
    m.release();
  }
  return out;
}

t.test('back-pressure: a full inbox', async (tt) => {
  const bpNs = `${ns}-bp`;
  const node = attach({ node: 0, namespace: bpNs, inboxCells: 16 });
  tt.teardown(() => node.detach());
  const a = node.bind(DC, 1), b = node.bind(DC, 2);
  let accepted = 0;
  while (a.trySend(2, `m${accepted}`)) if (++accepted > 10000) break;
  tt.equal(accepted, 16, 'trySend accepts exactly the inbox capacity, then returns false');
  tt.equal(a.trySend(2, 'refused'), false, 'still false');
  await tt.rejects(a.send(2, 'refused', { timeoutMs: 0 }), { code: 'EDVSAGAIN' }, 'send({ timeoutMs: 0 })');
  await tt.rejects(a.call(2, 'refused', { timeoutMs: 0 }), { code: 'EDVSAGAIN' }, 'call({ timeoutMs: 0 })');
  tt.throws(() => a.sendSync(2, 'refused', { timeoutMs: 0 }), { code: 'EDVSAGAIN' }, 'sendSync({ timeoutMs: 0 })');
  tt.throws(() => a.sendSync(2, 'refused', { timeoutMs: 30 }), { code: 'EDVSTIMEDOUT' }, 'sendSync({ timeoutMs: 30 })');
  await tt.rejects(a.send(2, 'refused', { timeoutMs: 30 }), { code: 'EDVSTIMEDOUT' }, 'send({ timeoutMs: 30 })');
  // Zero-copy buffers stay the sender's when refused.
  const buf = a.alloc(10);
  tt.equal(a.trySend(2, buf), false);
  a.free(buf);

  // Queued sends wait (in order) and resume when the receiver reads again.
  const settled: number[] = [];
  const pending = Array.from({ length: 40 }, (_, i) =>
    a.send(2, `m${accepted + i}`).then(() => void settled.push(i)),
  );
  tt.equal(a.trySend(2, 'refused'), false, 'trySend does not overtake queued sends');
  await tt.rejects(a.send(2, 'refused', { timeoutMs: 0 }), { code: 'EDVSAGAIN' }, 'nor does send({ timeoutMs: 0 })');
  await new Promise((r) => setTimeout(r, 100));
  tt.same(settled, [], 'nothing was accepted while the inbox was full');
  const got = await drain(b, accepted + 40);
  await within(Promise.all(pending), 10000, 'the queued sends to complete');
  tt.same(settled, Array.from({ length: 40 }, (_, i) => i), 'queued sends completed in order');
  tt.same(got, Array.from({ length: accepted + 40 }, (_, i) => `m${i}`), 'everything arrived once, in order');
  await tt.rejects(b.receive({ timeoutMs: 0 }), { code: 'EDVSAGAIN' }, 'and nothing else (no refused message slipped in)');
  await tick();
  tt.same(node.stats().classes.map((c) => c.inUse), node.stats().classes.map(() => 0), 'no block in use');
});

t.test('back-pressure: a full arena', async (tt) => {
  const bpNs = `${ns}-arena`;
  const node = attach({ node: 0, namespace: bpNs, poolMib: 4 });
  tt.teardown(() => node.detach());
  const a = node.bind(DC, 1), b = node.bind(DC, 2);
  const big = node.stats().classes.at(-1)!;
  tt.equal(big.size, 1 << 20);
  // Take every 1 MiB block.
  const held: Uint8Array[] = [];
  for (;;) {
    try {
      held.push(a.alloc(1 << 20));
    } catch (e) {
      tt.equal((e as { code?: string }).code, 'EDVSAGAIN', 'alloc() reports an exhausted arena with EDVSAGAIN');
      break;
    }
    if (held.length > big.blocks) break;
  }
  tt.equal(held.length, big.blocks, 'all 1 MiB blocks allocated');
  const payload = new Uint8Array(1 << 20).fill(7);
  tt.equal(a.trySend(2, payload), false, 'trySend of 1 MiB: no block');
  await tt.rejects(a.send(2, payload, { timeoutMs: 0 }), { code: 'EDVSAGAIN' });
  await tt.rejects(a.send(2, payload, { timeoutMs: 30 }), { code: 'EDVSTIMEDOUT' });
  const p = a.send(2, payload);
  let done = false;
  void p.then(() => (done = true));
  await new Promise((r) => setTimeout(r, 50));
  tt.equal(done, false, 'waits for a block');
  a.free(held.pop()!);
  await within(p, 10000, 'the send to resume when a block is freed');
  const m = await b.receive({ timeoutMs: 5000 });
  tt.equal(m.length, 1 << 20);
  tt.equal(m.payload[12345], 7);
  m.release();
  // Small messages still flow while the big class is exhausted.
  await a.send(2, 'small');
  const s = await b.receive({ timeoutMs: 5000 });
  tt.equal(s.text(), 'small');
  s.release();
  for (const h of held) a.free(h);
  await tick();
  tt.same(node.stats().classes.map((c) => c.inUse), node.stats().classes.map(() => 0), 'no block in use');
});

t.test('back-pressure across processes: a blocked sender resumes when the receiver reads', async (tt) => {
  const bpNs = `${ns}-bpx`;
  const node = attach({ node: 0, namespace: bpNs, inboxCells: 16 });
  tt.teardown(() => node.detach());
  const r = node.bind(DC, 1);
  const N = 5000;
  const sender = spawnFixture(tt, 'sender', [bpNs, 0, DC, 2, 1, N, 'async', 8]);
  await within(sender.expect('ready'), 30000, 'sender ready');
  sender.send('go');
  // Let it fill the inbox and block, then read everything.
  for (let i = 0; i < 2000 && node.stats().endpoints.find((e) => e.ep === 1)!.queued < 16; i++)
    await new Promise((res) => setTimeout(res, 10));
  tt.equal(node.stats().endpoints.find((e) => e.ep === 1)!.queued, 16, 'the inbox filled up');
  const errors: string[] = [];
  let next = 0;
  for (let i = 0; i < N; i++) {
    const m = await within(r.receive({ timeoutMs: 20000 }), 30000, `message ${i}`);
    const seq = new DataView(m.payload.buffer, m.payload.byteOffset, 8).getUint32(0, true);
    if (seq !== next && errors.length < 10) errors.push(`got ${seq}, expected ${next}`);
    next = seq + 1;
    m.release();
  }
  tt.same(errors, []);
  tt.equal(next, N);
  tt.same(await sender.json(), { sent: N });
  await assertClean(tt as never, sender, 'sender');
  await tt.rejects(r.receive({ timeoutMs: 0 }), { code: 'EDVSAGAIN' }, 'nothing more');
});

t.test('nothing left behind', async (tt) => {
  for (const n of [ns, `${ns}-bp`, `${ns}-arena`, `${ns}-bpx`]) assertNoShm(tt, n);
});
