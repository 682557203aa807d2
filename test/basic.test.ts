// basic.test.ts — single-process semantics of the API: send/receive,
// call/reply, notifications, filtered receive, zero-copy, payload shapes and
// sizes, timeouts, the async iterator.
import t from 'tap';
import { attach, type Endpoint, type Message, type Node } from '../lib/index.js';
import { assertNoShm, fnv1a, pattern, tick, uniqueNs, within, type T as Test } from './helpers.js';

const ns = uniqueNs('basic');
const DC = 1;
const enc = new TextEncoder();

/** A node of this file's namespace, detached when the test ends. */
function setup(tt: Test): Node {
  const node = attach({ node: 0, namespace: ns });
  tt.teardown(() => node.detach());
  return node;
}

/** Asserts every payload block has been returned (after batched releases are flushed). */
async function assertNoBlocksInUse(tt: Test, node: Node, what = 'no payload block in use'): Promise<void> {
  await tick();
  tt.same(
    node.stats().classes.map((c) => c.inUse),
    node.stats().classes.map(() => 0),
    what,
  );
}

const recv = (ep: Endpoint, opts: { from?: number; timeoutMs?: number } = {}): Promise<Message> =>
  within(ep.receive({ timeoutMs: 5000, ...opts }), 10000, 'receive');

t.test('send / receive', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 10), b = node.bind(DC, 11);
  const data = new Uint8Array([1, 2, 3, 250, 0, 7]);
  await a.send(11, data);
  data[0] = 99; // the payload was copied when accepted
  const m = await recv(b);
  tt.equal(m.kind, 'send');
  tt.equal(m.src, 10);
  tt.equal(m.srcNode, 0);
  tt.equal(m.dc, DC);
  tt.equal(m.length, 6);
  tt.equal(m.needsReply, false);
  tt.same([...m.payload], [1, 2, 3, 250, 0, 7]);
  m.release();
  m.release(); // idempotent

  // { dc, ep } addressing in the sender's own DC, and a Buffer payload.
  await a.send({ dc: DC, ep: 11 }, Buffer.from('buffer payload'));
  const m2 = await recv(b);
  tt.equal(m2.text(), 'buffer payload');
  m2.release();

  // trySend and sendSync deliver too, in order.
  tt.equal(a.trySend(11, 'one'), true);
  a.sendSync(11, 'two');
  await a.send(11, 'three');
  const got: string[] = [];
  for (let i = 0; i < 3; i++) {
    const m3 = i === 1 ? b.receiveSync({ timeoutMs: 5000 }) : await recv(b);
    got.push(m3.text());
    m3.release();
  }
  tt.same(got, ['one', 'two', 'three']);
  await assertNoBlocksInUse(tt, node);
});

t.test('call / reply', async (tt) => {
  const node = setup(tt);
  const client = node.bind(DC, 20), server = node.bind(DC, 21);
  const served = (async () => {
    for (let i = 0; i < 3; i++) {
      const m = await recv(server);
      tt.equal(m.kind, 'call');
      tt.equal(m.src, 20);
      tt.equal(m.needsReply, true);
      m.reply(m.text().toUpperCase());
      tt.equal(m.needsReply, false);
      m.release();
    }
  })();
  for (const w of ['hello', 'call', 'reply']) {
    const r = await within(client.call(21, w, { timeoutMs: 5000 }), 10000, 'call');
    tt.equal(r.kind, 'reply');
    tt.equal(r.src, 21);
    tt.equal(r.text(), w.toUpperCase());
    r.release();
  }
  await served;

  // Many calls in flight at once from one endpoint, answered out of order.
  const calls = Array.from({ length: 50 }, (_, i) => client.call(21, `n${i}`, { timeoutMs: 10000 }));
  const pending: Message[] = [];
  for (let i = 0; i < 50; i++) pending.push(await recv(server));
  for (const m of pending.reverse()) {
    m.reply(`r${m.text().slice(1)}`);
    m.release();
  }
  const replies = await within(Promise.all(calls), 10000, 'pipelined calls');
  tt.same(
    replies.map((r) => r.text()),
    Array.from({ length: 50 }, (_, i) => `r${i}`),
    'every reply goes to its own call',
  );
  for (const r of replies) r.release();
  await assertNoBlocksInUse(tt, node);
});

t.test('notifications coalesce and come before queued messages', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 30), b = node.bind(DC, 31), c = node.bind(DC, 32);
  await a.send(31, 'm1');
  await c.send(31, 'm2');
  a.notify(31, 1);
  a.notify(31, 2);
  a.notify({ dc: DC, ep: 31 }, 8);
  c.notify(31, 0x80000000);
  a.notify(31, 0); // no bits: nothing to deliver
  const first = [await recv(b), await recv(b)];
  tt.same(
    first.map((m) => m.kind),
    ['notify', 'notify'],
    'notifications first',
  );
  const bits = Object.fromEntries(first.map((m) => [m.src, m.bits]));
  tt.same(bits, { 30: 1 | 2 | 8, 32: 0x80000000 }, 'one notification per source, bits OR-ed');
  for (const m of first) {
    tt.equal(m.length, 0);
    tt.equal(m.payload.length, 0);
    m.release();
  }
  const m1 = await recv(b), m2 = await recv(b);
  tt.same([m1.kind, m1.text(), m2.kind, m2.text()], ['send', 'm1', 'send', 'm2'], 'then the queued messages, in order');
  m1.release();
  m2.release();
  await tt.rejects(b.receive({ timeoutMs: 0 }), { code: 'EDVSAGAIN' }, 'nothing more (no empty notification)');

  // A receiver already waiting is woken by a notification.
  const waiting = recv(b);
  await tick();
  a.notify(31, 4);
  const n = await waiting;
  tt.same([n.kind, n.src, n.bits], ['notify', 30, 4]);
  // receive({ from }) filters notifications too.
  a.notify(31, 16);
  c.notify(31, 32);
  const fromC = await recv(b, { from: 32 });
  tt.same([fromC.kind, fromC.bits], ['notify', 32]);
  const fromA = await recv(b);
  tt.same([fromA.kind, fromA.src, fromA.bits], ['notify', 30, 16]);
  await tt.rejects(b.receive({ timeoutMs: 0 }), { code: 'EDVSAGAIN' });
});

t.test('receive({ from }) takes only that source and keeps the others in order', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 40), b = node.bind(DC, 41), c = node.bind(DC, 42);
  await a.send(41, 'a1');
  await a.send(41, 'a2');
  await c.send(41, 'c1');
  await a.send(41, 'a3');
  await c.send(41, 'c2');
  await a.send(41, 'a4');
  const take = async (from?: number) => {
    const m = await recv(b, from === undefined ? {} : { from });
    const s = m.text();
    m.release();
    return s;
  };
  tt.equal(await take(42), 'c1');
  tt.equal(await take(42), 'c2');
  await tt.rejects(b.receive({ from: 42, timeoutMs: 0 }), { code: 'EDVSAGAIN' }, 'no more from 42');
  tt.equal(await take(), 'a1');
  // Now some are read ahead (batched) on the JS side; filtering still works.
  await c.send(41, 'c3');
  tt.equal(await take(42), 'c3');
  tt.same([await take(), await take(), await take()], ['a2', 'a3', 'a4'], 'the others, in their order');

  // A filtered receive that is waiting ignores other sources.
  const waiting = recv(b, { from: 42 });
  await a.send(41, 'a5');
  await tick();
  await c.send(41, 'c4');
  const w = await waiting;
  tt.equal(w.text(), 'c4');
  w.release();
  tt.equal(await take(), 'a5');
  // Interleaved streams: a filtered reader per source, both see their own order.
  for (let i = 0; i < 100; i++) {
    await a.send(41, `a${i}`);
    await c.send(41, `c${i}`);
  }
  const fromA: string[] = [], fromC: string[] = [];
  for (let i = 0; i < 100; i++) {
    fromC.push(await take(42));
    if (i % 2) fromA.push(await take(40));
  }
  while (fromA.length < 100) fromA.push(await take());
  tt.same(fromA, Array.from({ length: 100 }, (_, i) => `a${i}`));
  tt.same(fromC, Array.from({ length: 100 }, (_, i) => `c${i}`));
  await assertNoBlocksInUse(tt, node);
});

t.test('zero-copy alloc() + send', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 50), b = node.bind(DC, 51);
  for (const size of [0, 1, 256, 257, 4096, 65536, 1 << 20]) {
    const buf = a.alloc(size);
    tt.equal(buf.length, size);
    buf.set(pattern(size, size + 1));
    await a.send(51, buf);
    tt.throws(() => a.free(buf), { code: 'EDVSINVAL' }, 'a sent buffer is no longer ours');
    const m = await recv(b);
    tt.equal(m.length, size);
    if (size > 0) tt.equal(m.payload.byteOffset, buf.byteOffset, `${size} bytes: received in place, not copied`);
    tt.equal(fnv1a(m.payload), fnv1a(pattern(size, size + 1)), `${size} bytes intact`);
    m.release();
  }
  // alloc() for a call and for its reply.
  const req = a.alloc(10);
  req.set(enc.encode('zero-copy!'));
  const call = a.call(51, req, { timeoutMs: 5000 });
  const m = await recv(b);
  tt.equal(m.text(), 'zero-copy!');
  const rep = b.alloc(5);
  rep.set(enc.encode('done!'));
  m.reply(rep);
  m.release();
  const r = await call;
  tt.equal(r.text(), 'done!');
  tt.equal(r.payload.byteOffset, rep.byteOffset, 'the reply was not copied');
  r.release();
  // A buffer that is not sent can be given back.
  const unused = a.alloc(100);
  a.free(unused);
  tt.throws(() => a.free(unused), { code: 'EDVSINVAL' }, 'double free is refused');
  tt.throws(() => a.free(new Uint8Array(4)), { code: 'EDVSINVAL' }, 'not from alloc()');
  await assertNoBlocksInUse(tt, node);
});

t.test('string payloads', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 60), b = node.bind(DC, 61);
  const samples = ['plain ascii', 'héllo wörld', 'ユニコード ✓ 🎉 \u0000 nul', 'x'.repeat(5000), '€'.repeat(100000)];
  for (const s of samples) {
    await a.send(61, s);
    const m = await recv(b);
    tt.equal(m.length, Buffer.byteLength(s), 'UTF-8 length');
    tt.equal(m.text(), s);
    m.release();
  }
  // As a call and as a reply.
  const call = a.call(61, 'ça va?', { timeoutMs: 5000 });
  const m = await recv(b);
  m.reply('très bien ✓');
  m.release();
  const r = await call;
  tt.equal(r.text(), 'très bien ✓');
  r.release();
  await assertNoBlocksInUse(tt, node);
});

t.test('empty payloads', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 70), b = node.bind(DC, 71);
  for (const p of [undefined, null, '', new Uint8Array(0), Buffer.alloc(0)]) {
    await a.send(71, p);
    const m = await recv(b);
    tt.equal(m.kind, 'send');
    tt.equal(m.length, 0);
    tt.equal(m.payload.length, 0);
    tt.equal(m.text(), '');
    m.release();
  }
  const call = a.call(71, undefined, { timeoutMs: 5000 });
  const m = await recv(b);
  tt.equal(m.kind, 'call');
  tt.equal(m.length, 0);
  m.reply();
  m.release();
  const r = await call;
  tt.equal(r.kind, 'reply');
  tt.equal(r.length, 0);
  r.release();
  await assertNoBlocksInUse(tt, node);
});

t.test('1 MiB payloads round-trip intact', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 80), b = node.bind(DC, 81);
  const big = pattern(1 << 20, 42);
  const sum = fnv1a(big);
  await a.send(81, big);
  const m = await recv(b);
  tt.equal(m.length, 1 << 20);
  tt.equal(fnv1a(m.payload), sum, 'send: checksum matches');
  m.release();
  // Several at once (more than fit in the inbox? no: 64 blocks of 1 MiB; use 10).
  for (let i = 0; i < 10; i++) await a.send(81, pattern(1 << 20, i + 1));
  for (let i = 0; i < 10; i++) {
    const mi = await recv(b);
    tt.equal(fnv1a(mi.payload), fnv1a(pattern(1 << 20, i + 1)), `message ${i} intact`);
    mi.release();
  }
  // A call with a 1 MiB request and a 1 MiB reply.
  const call = a.call(81, big, { timeoutMs: 5000 });
  const c = await recv(b);
  tt.equal(fnv1a(c.payload), sum);
  const rev = Uint8Array.from(c.payload).reverse();
  c.reply(rev);
  c.release();
  const r = await call;
  tt.equal(r.length, 1 << 20);
  tt.equal(fnv1a(r.payload), fnv1a(rev), 'reply: checksum matches');
  r.release();
  await assertNoBlocksInUse(tt, node);
});

t.test('timeouts', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 90), b = node.bind(DC, 91);
  await tt.rejects(b.receive({ timeoutMs: 0 }), { code: 'EDVSAGAIN' }, 'receive({ timeoutMs: 0 }) does not wait');
  await tt.rejects(within(b.receive({ timeoutMs: 50 }), 10000, 'receive'), { code: 'EDVSTIMEDOUT' });
  await tt.rejects(b.receive({ from: 90, timeoutMs: 30 }), { code: 'EDVSTIMEDOUT' });
  tt.throws(() => b.receiveSync({ timeoutMs: 0 }), { code: 'EDVSAGAIN' });
  tt.throws(() => b.receiveSync({ timeoutMs: 30 }), { code: 'EDVSTIMEDOUT' });
  tt.throws(() => b.receiveSync({ timeoutMs: 30, spinUs: 0 }), { code: 'EDVSTIMEDOUT' });

  // A call that is received but never answered.
  const call = a.call(91, 'anyone?', { timeoutMs: 100 });
  const m = await recv(b);
  await tt.rejects(within(call, 10000, 'call'), { code: 'EDVSTIMEDOUT' }, 'the call times out');
  // A late reply must not confuse the caller's next call (nor leak its block).
  try {
    m.reply('too late');
  } catch (e) {
    tt.equal((e as { code?: string }).code, 'EDVSPROCSTS', 'a late reply is refused, or dropped by the caller');
  }
  m.release();
  const next = a.call(91, 'again', { timeoutMs: 5000 });
  const m2 = await recv(b);
  m2.reply('on time');
  m2.release();
  const r = await next;
  tt.equal(r.text(), 'on time', 'the next call gets its own reply');
  r.release();
  await assertNoBlocksInUse(tt, node, 'the late reply was released');

  // A call that is never even received; then a timed-out send under back-pressure.
  await tt.rejects(a.call(91, 'unread', { timeoutMs: 50 }), { code: 'EDVSTIMEDOUT' });
  tt.throws(() => a.callSync(91, 'unread', { timeoutMs: 50 }), { code: 'EDVSTIMEDOUT' });
  await tt.rejects(a.call(91, 'no wait', { timeoutMs: 0 }), { code: 'EDVSAGAIN' });
  const drained: string[] = [];
  for (;;) {
    try {
      const x = await b.receive({ timeoutMs: 0 });
      if (x.needsReply) x.reply();
      drained.push(x.text());
      x.release();
    } catch {
      break;
    }
  }
  tt.same(drained, ['unread', 'unread', 'no wait'], 'the abandoned calls were delivered');
  await tick();
  await assertNoBlocksInUse(tt, node);
});

t.test('async iteration', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 100), b = node.bind(DC, 101);
  for (let i = 0; i < 5; i++) await a.send(101, `m${i}`);
  const seen: string[] = [];
  const held: Message[] = [];
  for await (const m of b) {
    seen.push(m.text());
    held.push(m);
    if (seen.length === 5) break;
  }
  tt.same(seen, ['m0', 'm1', 'm2', 'm3', 'm4']);
  tt.throws(() => held[0].payload, { code: 'EDVSPROCSTS' }, 'the loop released each message when it advanced');
  tt.throws(() => held[4].payload, { code: 'EDVSPROCSTS' }, 'and the last one when it was left');
  await assertNoBlocksInUse(tt, node);

  // The loop ends when the endpoint is closed while it waits.
  let n = 0;
  const loop = (async () => {
    for await (const m of b) {
      void m;
      n++;
    }
    return n;
  })();
  await a.send(101, 'x');
  await a.send(101, 'y');
  for (let i = 0; n < 2 && i < 1000; i++) await new Promise((r) => setTimeout(r, 5));
  b.close();
  tt.equal(await within(loop, 10000, 'the loop to end'), 2, 'the loop ended after the close');
  await assertNoBlocksInUse(tt, node);
});

t.test('the node shows its endpoints, processes and counters', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 110), b = node.bind(7, 110);
  const s = node.stats();
  tt.equal(s.node, 0);
  tt.equal(s.segment, `dvs.${ns}.0`);
  tt.same(
    s.endpoints.map((e) => [e.dc, e.ep, e.pid]).sort(),
    [
      [1, 110, process.pid],
      [7, 110, process.pid],
    ],
    'both endpoints (same number, different DCs) are bound to this process',
  );
  tt.ok(s.procs.some((p) => p.pid === process.pid));
  tt.equal(a.dc, DC);
  tt.equal(b.dc, 7);
  a.close();
  tt.equal(a.isClosed, true);
  tt.same(
    node.stats().endpoints.map((e) => [e.dc, e.ep]),
    [[7, 110]],
    'closing unbinds',
  );
  const info = node.info();
  tt.equal(info.name, `dvs.${ns}.0`);
  tt.equal(info.pid, process.pid);
});

t.test('more notifiers than notification slots: none is lost', async (tt) => {
  const node = setup(tt);
  const dst = node.bind(DC, 120);
  const N = 70; // the core keeps 64 coalescing slots per endpoint; the rest travel as messages
  const srcs = Array.from({ length: N }, (_, i) => node.bind(DC, 200 + i));
  srcs.forEach((e, i) => e.notify(120, 1 << i % 31));
  srcs.forEach((e, i) => e.notify(120, 0x80000000 + i));
  const bits = new Map<number, number>();
  for (;;) {
    let m: Message;
    try {
      m = await dst.receive({ timeoutMs: 0 });
    } catch (e) {
      tt.equal((e as { code?: string }).code, 'EDVSAGAIN');
      break;
    }
    tt.equal(m.kind, 'notify');
    bits.set(m.src, ((bits.get(m.src) ?? 0) | m.bits) >>> 0);
    m.release();
  }
  tt.equal(bits.size, N, 'a notification from every source');
  const wrong = srcs.filter((e, i) => bits.get(e.ep) !== ((1 << i % 31) | 0x80000000 | i) >>> 0).map((e) => e.ep);
  tt.same(wrong, [], 'each with all its bits');
  await assertNoBlocksInUse(tt, node);
});

t.test('an endpoint can message and call itself', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 130);
  await a.send(130, 'to myself');
  const m = await recv(a);
  tt.same([m.kind, m.src, m.text()], ['send', 130, 'to myself']);
  m.release();
  const call = a.call(130, 'ping', { timeoutMs: 5000 });
  const c = await recv(a);
  tt.equal(c.kind, 'call');
  c.reply('pong');
  c.release();
  const r = await within(call, 10000, 'self call');
  tt.same([r.kind, r.src, r.text()], ['reply', 130, 'pong']);
  r.release();
  a.notify(130, 5);
  const n = await recv(a);
  tt.same([n.kind, n.src, n.bits], ['notify', 130, 5]);
  await assertNoBlocksInUse(tt, node);
});

t.test('nothing left behind', async (tt) => {
  assertNoShm(tt, ns);
});
