// errors.test.ts — every bad input gives its documented error code, and none
// of them leaves the arena inconsistent: afterwards a normal send/receive
// works and every payload block is back.
import t from 'tap';
import { attach, DvsError, MAX_PAYLOAD, type Endpoint, type Node } from '../lib/index.js';
import { assertNoShm, spawnFixture, tick, uniqueNs, within, type T } from './helpers.js';

const ns = uniqueNs('errors');
const DC = 1;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

function setup(tt: T): Node {
  const node = attach({ node: 0, namespace: ns });
  tt.teardown(() => node.detach());
  return node;
}

/** A normal exchange still works and no payload block is left in use. */
async function assertHealthy(tt: T & { equal: Any }, node: Node, a: Endpoint, b: Endpoint): Promise<void> {
  await a.send(b.ep, 'still works');
  const m = await within(b.receive({ timeoutMs: 5000 }), 10000, 'receive');
  tt.equal(m.text(), 'still works', 'a normal send/receive still works');
  m.release();
  await tick();
  tt.same(
    node.stats().classes.map((c) => c.inUse),
    node.stats().classes.map(() => 0),
    'no payload block in use',
  );
}

t.test('DvsError carries a stable code and errno', async (tt) => {
  const e = new DvsError('EDVSNOTBIND');
  tt.equal(e.code, 'EDVSNOTBIND');
  tt.equal(e.errno, -310);
  tt.equal(e.name, 'DvsError');
  tt.ok(e instanceof Error);
  tt.match(e.message, /^EDVSNOTBIND: /);
  tt.equal(new DvsError(-302).code, 'EDVSBADDCID');
  tt.equal(new DvsError(-12345).code, 'EDVSUNKNOWN');
});

t.test('bad arguments', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 1), b = node.bind(DC, 2);
  const big = new Uint8Array(MAX_PAYLOAD + 1);

  tt.test('wrong types -> EDVSINVAL', async (t2) => {
    const inval = { code: 'EDVSINVAL' };
    t2.throws(() => node.bind('a' as Any, 1), inval, "bind('a', 1)");
    t2.throws(() => node.bind(1, '1' as Any), inval, "bind(1, '1')");
    t2.throws(() => node.bind(1.5, 1), inval, 'bind(1.5, 1)');
    t2.throws(() => node.bind(1, NaN), inval, 'bind(1, NaN)');
    t2.throws(() => node.bind(undefined as Any, undefined as Any), inval, 'bind()');
    await t2.rejects(a.send(2, 123 as Any), inval, 'send(2, 123)');
    await t2.rejects(a.send(2, { length: 3 } as Any), inval, 'send(2, array-like)');
    await t2.rejects(a.send(2, new Uint16Array(4) as Any), inval, 'send(2, Uint16Array)');
    await t2.rejects(a.send('2' as Any, 'x'), inval, "send('2', ...)");
    await t2.rejects(a.send(null as Any, 'x'), inval, 'send(null, ...)');
    await t2.rejects(a.send({ dc: DC } as Any, 'x'), inval, 'send({ dc }) without ep');
    await t2.rejects(a.send({ dc: DC, ep: 'x' } as Any, 'x'), inval, 'send({ dc, ep: string })');
    await t2.rejects(a.call(2, 5 as Any), inval, 'call(2, 5)');
    t2.throws(() => a.trySend(2, {} as Any), inval, 'trySend(2, {})');
    t2.throws(() => a.sendSync(2, [1, 2] as Any), inval, 'sendSync(2, [1, 2])');
    t2.throws(() => a.notify(2, -1), inval, 'notify(2, -1)');
    t2.throws(() => a.notify(2, 2 ** 32), inval, 'notify(2, 2^32)');
    t2.throws(() => a.notify(2, 1.5), inval, 'notify(2, 1.5)');
    t2.throws(() => a.notify(2, '1' as Any), inval, "notify(2, '1')");
    await t2.rejects(a.send(2, 'x', { timeoutMs: -5 }), inval, 'send timeoutMs: -5');
    await t2.rejects(a.send(2, 'x', { timeoutMs: NaN }), inval, 'send timeoutMs: NaN');
    await t2.rejects(a.call(2, 'x', { timeoutMs: -5 }), inval, 'call timeoutMs: -5');
    await t2.rejects(b.receive({ timeoutMs: -5 }), inval, 'receive timeoutMs: -5');
    await t2.rejects(b.receive({ timeoutMs: '10' as Any }), inval, "receive timeoutMs: '10'");
    await t2.rejects(b.receive({ from: 'x' as Any }), inval, "receive from: 'x'");
    t2.throws(() => b.receiveSync({ timeoutMs: -5 }), inval, 'receiveSync timeoutMs: -5');
    t2.throws(() => b.receiveSync({ timeoutMs: 0, spinUs: -1 }), inval, 'receiveSync spinUs: -1');
    t2.throws(() => a.callSync(2, 'x', { timeoutMs: -5 }), inval, 'callSync timeoutMs: -5');
    t2.throws(() => a.sendSync(2, 'x', { timeoutMs: -5 }), inval, 'sendSync timeoutMs: -5');
    t2.throws(() => a.alloc(-1), inval, 'alloc(-1)');
    t2.throws(() => a.alloc(1.5), inval, 'alloc(1.5)');
    t2.throws(() => a.alloc('8' as Any), inval, "alloc('8')");
    t2.throws(() => attach('x' as Any), inval, "attach('x')");
    t2.throws(() => attach({ node: 'x' as Any, namespace: ns }), inval, "attach({ node: 'x' })");
    t2.throws(() => attach({ namespace: 'a/b' }), inval, "attach({ namespace: 'a/b' })");
    t2.throws(() => attach({ namespace: '' }), inval, "attach({ namespace: '' })");
    t2.throws(() => attach({ namespace: ns, wake: 'poll' as Any }), inval, "attach({ wake: 'poll' })");
    t2.throws(() => attach({ namespace: ns, maxProcs: -1 }), inval, 'attach({ maxProcs: -1 })');
    t2.throws(() => attach({ namespace: ns, node: 1025 }), { code: 'EDVSBADNODEID' }, 'attach({ node: 1025 })');
    t2.throws(() => attach({ namespace: ns, node: -1 }), { code: 'EDVSBADNODEID' }, 'attach({ node: -1 })');
  });

  tt.test('endpoints out of range -> EDVSENDPOINT', async (t2) => {
    const code = { code: 'EDVSENDPOINT' };
    t2.throws(() => node.bind(DC, -1), code, 'bind(dc, -1)');
    t2.throws(() => node.bind(DC, 2 ** 24), code, 'bind(dc, 2^24)');
    await t2.rejects(a.send(-1, 'x'), code, 'send(-1)');
    await t2.rejects(a.send(2 ** 24, 'x'), code, 'send(2^24)');
    await t2.rejects(a.send({ dc: DC, ep: 2 ** 24 }, 'x'), code, 'send({ dc, ep: 2^24 })');
    await t2.rejects(a.call(-1, 'x'), code, 'call(-1)');
    t2.throws(() => a.trySend(-1, 'x'), code, 'trySend(-1)');
    t2.throws(() => a.notify(2 ** 24, 1), code, 'notify(2^24)');
    await t2.rejects(b.receive({ from: 2 ** 24 }), code, 'receive({ from: 2^24 })');
    await t2.rejects(b.receive({ from: -2 }), code, 'receive({ from: -2 })');
  });

  tt.test('DC out of range -> EDVSBADDCID', async (t2) => {
    const code = { code: 'EDVSBADDCID' };
    t2.throws(() => node.bind(-1, 1), code, 'bind(-1, ep)');
    t2.throws(() => node.bind(4096, 1), code, 'bind(4096, ep)');
    await t2.rejects(a.send({ dc: 4096, ep: 2 }, 'x'), code, 'send({ dc: 4096 })');
  });

  tt.test('oversized payloads -> EDVS2BIG', async (t2) => {
    const code = { code: 'EDVS2BIG' };
    await t2.rejects(a.send(2, big), code, 'send(1 MiB + 1)');
    await t2.rejects(a.send(2, 'x'.repeat(MAX_PAYLOAD + 1)), code, 'send(string of 1 MiB + 1 bytes)');
    await t2.rejects(a.send(2, '€'.repeat(MAX_PAYLOAD / 3 + 1)), code, 'send(string of 1 MiB + 1 UTF-8 bytes)');
    await t2.rejects(a.call(2, big), code, 'call(1 MiB + 1)');
    t2.throws(() => a.trySend(2, big), code, 'trySend(1 MiB + 1)');
    t2.throws(() => a.sendSync(2, big), code, 'sendSync(1 MiB + 1)');
    t2.throws(() => a.alloc(MAX_PAYLOAD + 1), code, 'alloc(1 MiB + 1)');
    // Exactly 1 MiB is fine.
    await a.send(2, new Uint8Array(MAX_PAYLOAD));
    const m = await b.receive({ timeoutMs: 5000 });
    t2.equal(m.length, MAX_PAYLOAD);
    m.release();
    // A reply that is too big fails (whether the call can still be answered
    // is checked separately below).
    const call = a.call(2, 'q', { timeoutMs: 300 });
    const c = await b.receive({ timeoutMs: 5000 });
    t2.throws(() => c.reply(big), code, 'reply(1 MiB + 1)');
    try {
      c.reply('ok');
    } catch {
      /* see 'a failed reply(too big) does not mark the call as answered' */
    }
    c.release();
    const r = await call.catch(() => null);
    r?.release();
  });

  tt.test('after all of them', async (t2) => {
    await assertHealthy(t2 as Any, node, a, b);
  });
});

t.test('a failed reply(too big) does not mark the call as answered', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 11), b = node.bind(DC, 12);
  const call = a.call(12, 'q', { timeoutMs: 2000 });
  const c = await b.receive({ timeoutMs: 5000 });
  tt.throws(() => c.reply(new Uint8Array(MAX_PAYLOAD + 1)), { code: 'EDVS2BIG' });
  tt.equal(c.needsReply, true, 'still needs a reply');
  let second: string | null = null;
  try {
    c.reply('second try');
  } catch (e) {
    second = (e as DvsError).code;
  }
  tt.equal(second, null, 'a reply() after the failed one is accepted');
  c.release();
  const r = await call.then(
    (m) => {
      const text = m.text();
      m.release();
      return text;
    },
    (e: DvsError) => e.code,
  );
  tt.equal(r, 'second try', 'the caller gets that reply');
});

t.test('binding', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 20), b = node.bind(DC, 21);
  tt.throws(() => node.bind(DC, 20), { code: 'EDVSSLOTUSED' }, 'double bind in one process');
  const other = node.bind(2, 20);
  tt.equal(other.dc, 2, 'the same number in another DC is another endpoint');
  other.close();

  // Across processes.
  const child = spawnFixture(tt, 'server', [ns, 0, DC, 22, 'idle']);
  tt.equal(await child.line(), 'ready');
  tt.throws(() => node.bind(DC, 22), { code: 'EDVSSLOTUSED' }, 'bound by another (live) process');
  const second = spawnFixture(tt, 'server', [ns, 0, DC, 21, 'idle']);
  tt.same(await second.json(), { error: 'EDVSSLOTUSED' }, 'a child cannot bind what this process holds');
  tt.equal((await second.exit()).code, 3);
  child.kill('SIGTERM');
  await child.exit();
  await assertHealthy(tt as Any, node, a, b);
});

t.test('unbound, closed, detached', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 30), b = node.bind(DC, 31);
  await tt.rejects(a.send(39, 'x'), { code: 'EDVSNOTBIND' }, 'send to an unbound endpoint');
  await tt.rejects(a.send(39, new Uint8Array(70000)), { code: 'EDVSNOTBIND' }, 'a large send to an unbound endpoint');
  await tt.rejects(a.send(39, 'x', { timeoutMs: 0 }), { code: 'EDVSNOTBIND' });
  tt.throws(() => a.trySend(39, 'x'), { code: 'EDVSNOTBIND' }, 'trySend to an unbound endpoint');
  tt.throws(() => a.sendSync(39, 'x'), { code: 'EDVSNOTBIND' }, 'sendSync to an unbound endpoint');
  await tt.rejects(a.call(39, 'x'), { code: 'EDVSNOTBIND' }, 'call to an unbound endpoint');
  tt.throws(() => a.callSync(39, 'x', { timeoutMs: 1000 }), { code: 'EDVSNOTBIND' }, 'callSync to an unbound endpoint');
  tt.throws(() => a.notify(39, 1), { code: 'EDVSNOTBIND' }, 'notify to an unbound endpoint');
  const buf = a.alloc(100);
  await tt.rejects(a.send(39, buf), { code: 'EDVSNOTBIND' }, 'zero-copy send to an unbound endpoint');
  a.free(buf); // still ours after the failed send

  // Use after close.
  const c = node.bind(DC, 32);
  const pending = c.receive();
  const pendingCall = c.call(31, 'will be abandoned');
  c.close();
  c.close(); // idempotent
  await tt.rejects(pending, { code: 'EDVSNOTBIND' }, 'a pending receive rejects on close');
  await tt.rejects(pendingCall, { code: 'EDVSNOTBIND' }, 'a pending call rejects on close');
  await tt.rejects(c.send(31, 'x'), { code: 'EDVSNOTBIND' }, 'send after close');
  await tt.rejects(c.receive(), { code: 'EDVSNOTBIND' }, 'receive after close');
  await tt.rejects(c.call(31, 'x'), { code: 'EDVSNOTBIND' }, 'call after close');
  tt.throws(() => c.trySend(31, 'x'), { code: 'EDVSNOTBIND' });
  tt.throws(() => c.receiveSync({ timeoutMs: 0 }), { code: 'EDVSNOTBIND' });
  tt.throws(() => c.notify(31, 1), { code: 'EDVSNOTBIND' });
  tt.throws(() => c.alloc(10), { code: 'EDVSNOTBIND' });
  await tt.rejects(a.send(32, 'x'), { code: 'EDVSNOTBIND' }, 'send to a closed endpoint');
  // The abandoned call reached 31: answering it is refused, the caller is gone.
  const abandoned = await b.receive({ timeoutMs: 5000 });
  tt.equal(abandoned.text(), 'will be abandoned');
  tt.throws(() => abandoned.reply('nobody listens'), { code: 'EDVSPROCSTS' }, 'reply to a closed caller');
  abandoned.release();
  // Rebinding a closed endpoint works.
  const c2 = node.bind(DC, 32);
  await a.send(32, 'again');
  const m = await c2.receive({ timeoutMs: 5000 });
  tt.equal(m.text(), 'again');
  m.release();
  await assertHealthy(tt as Any, node, a, b);

  // Use after detach.
  const n2 = attach({ node: 0, namespace: ns });
  const d = n2.bind(DC, 33);
  const held = await (async () => {
    await a.send(33, 'held across detach');
    return d.receive({ timeoutMs: 5000 });
  })();
  const waiting = d.receive();
  n2.detach();
  n2.detach(); // idempotent
  tt.equal(n2.isDetached, true);
  await tt.rejects(waiting, { code: 'EDVSNOTBIND' }, 'a pending receive rejects on detach');
  const dvsinit = { code: 'EDVSDVSINIT' };
  tt.throws(() => n2.bind(DC, 34), dvsinit, 'bind after detach');
  tt.throws(() => n2.stats(), dvsinit, 'stats after detach');
  tt.throws(() => n2.reap(), dvsinit, 'reap after detach');
  tt.throws(() => n2.info(), dvsinit, 'info after detach');
  const epCode = async (p: Promise<unknown>) => ((await p.then(() => 'resolved', (e: DvsError) => e.code)) as string);
  const sendCode = await epCode(d.send(30, 'x'));
  tt.ok(['EDVSDVSINIT', 'EDVSNOTBIND'].includes(sendCode), `send on an endpoint of a detached node: ${sendCode}`);
  // A message still held when its node detached: reading it must not crash
  // the process (its memory stays mapped); it may throw a DvsError.
  try {
    void held.payload[0];
    void held.text();
  } catch (e) {
    tt.type(e, DvsError, 'reading a message held across detach throws a DvsError (if anything)');
  }
  held.release(); // harmless after detach
  await tt.rejects(a.send(33, 'x'), { code: 'EDVSNOTBIND' }, 'its endpoints are unbound');
  await assertHealthy(tt as Any, node, a, b);
});

t.test('cross-DC send is refused and nothing is delivered', async (tt) => {
  const node = setup(tt);
  const a = node.bind(1, 40), b = node.bind(1, 41);
  const other = node.bind(2, 41);
  await tt.rejects(a.send({ dc: 2, ep: 41 }, 'x'), { code: 'EDVSBADDCID' }, 'send');
  await tt.rejects(a.call({ dc: 2, ep: 41 }, 'x'), { code: 'EDVSBADDCID' }, 'call');
  tt.throws(() => a.trySend({ dc: 2, ep: 41 }, 'x'), { code: 'EDVSBADDCID' }, 'trySend');
  tt.throws(() => a.notify({ dc: 2, ep: 41 }, 1), { code: 'EDVSBADDCID' }, 'notify');
  await tt.rejects(other.receive({ timeoutMs: 0 }), { code: 'EDVSAGAIN' }, 'nothing reached DC 2');
  await tt.rejects(b.receive({ timeoutMs: 0 }), { code: 'EDVSAGAIN' }, 'nothing reached DC 1 either');
  await assertHealthy(tt as Any, node, a, b);
});

t.test('message misuse', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 50), b = node.bind(DC, 51);
  const call = a.call(51, 'question', { timeoutMs: 5000 });
  const m = await b.receive({ timeoutMs: 5000 });
  m.reply('answer');
  tt.throws(() => m.reply('again'), { code: 'EDVSPROCSTS' }, 'reply twice');
  m.release();
  tt.throws(() => m.payload, { code: 'EDVSPROCSTS' }, 'payload after release');
  tt.throws(() => m.text(), { code: 'EDVSPROCSTS' }, 'text after release');
  const r = await call;
  tt.equal(r.text(), 'answer');
  tt.throws(() => r.reply('x'), { code: 'EDVSPROCSTS' }, 'reply to a reply');
  r.release();
  tt.throws(() => r.payload, { code: 'EDVSPROCSTS' });
  await a.send(51, 'one-way');
  const s = await b.receive({ timeoutMs: 5000 });
  tt.throws(() => s.reply('x'), { code: 'EDVSPROCSTS' }, "reply to a 'send'");
  s.release();
  a.notify(51, 1);
  const n = await b.receive({ timeoutMs: 5000 });
  tt.throws(() => n.reply('x'), { code: 'EDVSPROCSTS' }, "reply to a 'notify'");
  n.release();
  // Mixing sync calls with pending async ones is refused, not corrupted.
  const c2 = a.call(51, 'async', { timeoutMs: 5000 });
  tt.throws(() => a.callSync(51, 'sync', { timeoutMs: 100 }), { code: 'EDVSBUSY' });
  const m2 = await b.receive({ timeoutMs: 5000 });
  m2.reply('ok');
  m2.release();
  (await c2).release();
  // Sync receive while an async one waits.
  const w = b.receive({ timeoutMs: 5000 });
  tt.throws(() => b.receiveSync({ timeoutMs: 0 }), { code: 'EDVSBUSY' });
  await a.send(51, 'wake');
  (await w).release();
  await assertHealthy(tt as Any, node, a, b);
});

t.test('closing an endpoint does not strand its unsent alloc() buffers', async (tt) => {
  const node = setup(tt);
  const a = node.bind(DC, 60), b = node.bind(DC, 61);
  const bufs = [a.alloc(100), a.alloc(5000), a.alloc(70000)];
  a.close();
  // Either close() gave them back, or free() still can.
  const codes: string[] = [];
  for (const buf of bufs) {
    try {
      a.free(buf);
    } catch (e) {
      codes.push((e as DvsError).code);
    }
  }
  tt.comment(`free() after close: ${codes.join(', ') || 'accepted'}`);
  await tick();
  tt.same(
    node.stats().classes.map((c) => c.inUse),
    node.stats().classes.map(() => 0),
    'no block of the closed endpoint is still in use',
  );
  await assertHealthy(tt as Any, node, node.bind(DC, 62), b);
});

t.test('endpoint and DC numbers at the limits are valid', async (tt) => {
  const node = setup(tt);
  for (const dc of [0, 4095]) {
    const lo = node.bind(dc, 0), hi = node.bind(dc, 2 ** 24 - 1);
    await lo.send(2 ** 24 - 1, 'up');
    const m = await hi.receive({ timeoutMs: 5000 });
    tt.same([m.src, m.dc, m.text()], [0, dc, 'up'], `DC ${dc}: endpoint 0 -> 16777215`);
    m.release();
    await hi.send({ dc, ep: 0 }, 'down');
    const m2 = await lo.receive({ timeoutMs: 5000 });
    tt.same([m2.src, m2.text()], [2 ** 24 - 1, 'down'], `DC ${dc}: endpoint 16777215 -> 0`);
    m2.release();
  }
  const a = node.bind(DC, 63), b = node.bind(DC, 64);
  await assertHealthy(tt as Any, node, a, b);
});

t.test('nothing left behind', async (tt) => {
  assertNoShm(tt, ns);
});
