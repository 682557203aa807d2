// crash.test.ts — processes killed with SIGKILL: their peers get errors in
// bounded time instead of hanging, everything they held goes back to the
// arena, their endpoints can be bound again, and a segment left by a crashed
// creator is recovered. (Many kills in a row: kill-cycles.test.ts.)
import { spawn } from 'node:child_process';
import t from 'tap';
import { attach, type DvsError, type Node } from '../lib/index.js';
import { assertNoShm, procState, ready, shmFiles, spawnFixture, tick, uniqueNs, within, type T } from './helpers.js';

const ns = uniqueNs('crash');
const DC = 1;

const inUse = (node: Node): number[] => node.stats().classes.map((c) => c.inUse);
const zeros = (node: Node): number[] => node.stats().classes.map(() => 0);
const codeOf = (e: unknown): string => (e as DvsError)?.code ?? String(e);

function setup(tt: T, opts: { namespace?: string } = {}): Node {
  const node = attach({ node: 0, namespace: opts.namespace ?? ns });
  tt.teardown(() => node.detach());
  return node;
}

t.test('receiver killed mid-stream', async (tt) => {
  const node = setup(tt);
  const s = node.bind(DC, 1);
  const rx = spawnFixture(tt, 'receiver', [ns, 0, DC, 10, 1e9, 'iter']);
  await ready(rx);

  // Stream to it; SIGKILL it after 20,000 messages and keep streaming.
  const payload = new Uint8Array(64);
  let sent = 0;
  const t0 = Date.now();
  const err = await within(
    (async () => {
      for (;;) {
        new DataView(payload.buffer).setUint32(0, sent, true);
        new DataView(payload.buffer).setUint32(4, 1, true);
        try {
          await s.send(10, payload);
        } catch (e) {
          return e;
        }
        if (++sent === 20000) rx.kill('SIGKILL');
      }
    })(),
    20000,
    'the stream to a killed receiver to fail',
  );
  tt.ok(sent >= 20000, `sent ${sent} before the error`);
  tt.ok(['EDVSDSTDIED', 'EDVSNOTBIND'].includes(codeOf(err)), `the sender got ${codeOf(err)} (${Date.now() - t0} ms)`);
  tt.equal((await rx.exit()).signal, 'SIGKILL');
  await tt.rejects(s.send(10, 'x'), { code: 'EDVSNOTBIND' }, 'the endpoint is gone');
  await tick();
  tt.same(inUse(node), zeros(node), 'what was queued for it was freed');
  tt.same(node.stats().procs.map((p) => p.pid), [process.pid], 'its process slot is gone');

  // A new process can bind the same endpoint, and traffic flows.
  const rx2 = spawnFixture(tt, 'receiver', [ns, 0, DC, 10, 1000, 'iter']);
  await ready(rx2);
  for (let i = 0; i < 1000; i++) {
    new DataView(payload.buffer).setUint32(0, i, true);
    await s.send(10, payload);
  }
  const r = await within(rx2.json<{ received: number; errors: string[] }>(), 30000, 'the new receiver');
  tt.equal(r.received, 1000);
  tt.same(r.errors, [], 'the new receiver got a fresh, ordered stream (nothing left from the old one)');
  tt.same(await rx2.exit(), { code: 0, signal: null });
});

t.test('callers waiting on a killed server get EDVSDSTDIED', async (tt) => {
  const node = setup(tt);
  const c = node.bind(DC, 2);
  const srv = spawnFixture(tt, 'server', [ns, 0, DC, 11, 'hold']);
  await ready(srv);
  // Three calls that it receives (and holds, never answering)...
  const calls = [0, 1, 2].map((i) => c.call(11, `q${i}`).catch((e: unknown) => e));
  for (let i = 1; i <= 3; i++) tt.same(await within(srv.json(), 10000, 'server got a call'), { got: i, kind: 'call' });
  srv.kill('SIGKILL');
  const results = await within(Promise.all(calls), 10000, 'the callers to be told');
  tt.same(results.map(codeOf), ['EDVSDSTDIED', 'EDVSDSTDIED', 'EDVSDSTDIED'], 'every waiting caller got EDVSDSTDIED');
  await srv.exit();
  await tt.rejects(c.call(11, 'late', { timeoutMs: 5000 }), { code: 'EDVSNOTBIND' }, 'a new call: not bound');

  // A blocking call (the test thread is blocked: a separate process does the killing).
  const srv2 = spawnFixture(tt, 'server', [ns, 0, DC, 12, 'hold']);
  await ready(srv2);
  const killer = spawn('/bin/sh', ['-c', `sleep 0.3; kill -9 ${srv2.pid}`], { stdio: 'ignore' });
  tt.teardown(() => void killer.kill('SIGKILL'));
  tt.throws(() => c.callSync(12, 'blocked', { timeoutMs: 20000 }), { code: 'EDVSDSTDIED' }, 'callSync gets EDVSDSTDIED');
  await srv2.exit();

  // The endpoint can be bound again by a new process, and calls work.
  const srv3 = spawnFixture(tt, 'server', [ns, 0, DC, 11, 'echo']);
  await ready(srv3);
  const r = await within(c.call(11, Uint8Array.from([1, 2, 3]), { timeoutMs: 10000 }), 20000, 'call');
  tt.same([...r.payload], [2, 3, 4], 'the new server answers');
  r.release();
  (await c.call(11, 'quit', { timeoutMs: 10000 })).release();
  tt.same(await srv3.exit(), { code: 0, signal: null });
  await tick();
  tt.same(inUse(node), zeros(node));
});

t.test('a killed caller: its pending replies are refused, nothing leaks', async (tt) => {
  const node = setup(tt);
  const srv = node.bind(DC, 3);
  const caller = spawnFixture(tt, 'caller', [ns, 0, DC, 13, 3, 10, 5, 5000]);
  await ready(caller);
  caller.send('go');
  const held = [];
  for (let i = 0; i < 5; i++) held.push(await within(srv.receive(), 10000, 'a call'));
  caller.kill('SIGKILL');
  await caller.exit();
  tt.equal(node.reap(), 1, 'reap() found the dead caller');
  for (const m of held) {
    tt.throws(() => m.reply(new Uint8Array(5000)), { code: 'EDVSPROCSTS' }, 'reply to a dead caller');
    m.release();
  }
  await tick();
  tt.same(inUse(node), zeros(node), 'no block in use');
});

async function holderScenario(tt: T & Record<string, any>, recover: 'reap' | 'attach'): Promise<void> {
  const node = setup(tt);
  const me = node.bind(DC, 4);
  const before = node.stats().reapedProcs;
  const holder = spawnFixture(tt, 'holder', [ns, 0, DC, 20, 5]);
  await ready(holder);
  for (const n of [10, 100, 5000, 100000, 1 << 20]) await me.send(20, new Uint8Array(n).fill(3));
  const seen = await within(holder.json<{ held: number; classes: number[] }>(), 10000, 'holder stats');
  tt.equal(seen.held, 5);
  tt.same(await holder.line(), 'holding');
  tt.ok(seen.classes.reduce((a, b) => a + b, 0) >= 10, 'the holder holds 5 allocations and 5 messages');
  tt.same(inUse(node), seen.classes, 'as this process sees it too');
  tt.ok(node.stats().endpoints.some((e) => e.ep === 20 && e.pid === holder.pid), 'its endpoint is bound');
  holder.kill('SIGKILL');
  tt.equal((await holder.exit()).signal, 'SIGKILL');
  if (recover === 'reap') {
    tt.equal(node.reap(), 1, 'reap() reclaimed one process');
    tt.equal(node.reap(), 0, 'and nothing the second time');
  } else {
    const n2 = attach({ node: 0, namespace: ns });
    n2.detach();
  }
  tt.same(inUse(node), zeros(node), 'every block it held is back');
  tt.same(node.stats().procs.map((p) => p.pid), [process.pid], 'its process slot is gone');
  tt.same(node.stats().endpoints.map((e) => e.ep), [4], 'its endpoint is unbound');
  tt.equal(node.stats().reapedProcs, before + 1, 'counted as reaped');
  await tt.rejects(me.send(20, 'x'), { code: 'EDVSNOTBIND' });
}

t.test('a killed process holding blocks: reap() returns them', (tt) => holderScenario(tt as never, 'reap'));
t.test('a killed process holding blocks: the next attach returns them', (tt) => holderScenario(tt as never, 'attach'));

// White-box: the state a producer leaves when it is killed right after
// claiming a mailbox cell (CAS on the cell word) and before advancing the
// ring's tail (native/core/mailbox.h ring_claim). The reaper turns the claim
// into a published skip record (reaper.cc, step 3); the mailbox must stay
// usable afterwards. The state is written into the arena directly, at the
// offsets of native/core/layout.h (layout version 7; static_asserts there pin them).
t.test('a producer killed between claiming a cell and advancing the tail does not wedge the mailbox', async (tt) => {
  const node = setup(tt);
  const sink = node.bind(DC, 30);
  const dv = new DataView(node._ab);
  const u64 = (o: number) => Number(dv.getBigUint64(o, true));
  if (dv.getBigUint64(0, true) !== 0x314e524153564431n || dv.getUint32(8, true) !== 7) {
    tt.fail('the arena layout is not version 7: update the offsets in this test');
    return;
  }
  // ArenaHeader: cfg.max_endpoints @36, cfg.inbox_cells @40, off_endpoints @112,
  // off_rings @128, ring_stride @152. EndpointSlot (896 bytes): state @0, dc @8,
  // ep @12, inbox_tail @256. Cell (64 bytes): word @0 = seq - index (low 32), claimer (high 32).
  const maxEp = dv.getUint32(36, true), cells = dv.getUint32(40, true);
  const offEp = u64(112), offRings = u64(128), stride = u64(152), EP_SIZE = 896;
  let slot = -1;
  for (let i = 0; i < maxEp && slot < 0; i++) {
    const b = offEp + i * EP_SIZE;
    if (dv.getUint32(b, true) === 1 && dv.getUint32(b + 8, true) === DC && dv.getInt32(b + 12, true) === 30) slot = i;
  }
  tt.ok(slot >= 0, 'found the endpoint slot');

  // A process that dies (SIGKILL) with its slot still live: the "producer".
  const victim = spawnFixture(tt, 'server', [ns, 0, DC, 31, 'idle']);
  await ready(victim);
  const proc = node.stats().procs.find((p) => p.pid === victim.pid)!;
  victim.kill('SIGKILL');
  await victim.exit();

  // Its claim: the cell at the tail, claimed by it, the tail not advanced.
  const tail = dv.getUint32(offEp + slot * EP_SIZE + 256, true);
  const idx = tail & (cells - 1);
  const cell = offRings + stride * slot + idx * 64;
  tt.equal(dv.getUint32(cell, true), 0, 'the cell at the tail is free (seq == tail)');
  dv.setUint32(cell + 4, proc.slot + 1, true);
  tt.equal(node.reap(), 1, 'the reaper found the dead producer');
  await tt.rejects(sink.receive({ timeoutMs: 0 }), { code: 'EDVSAGAIN' }, 'the consumer skips the dead claim');

  // A new producer must get through (in a child: a wedged mailbox makes it spin).
  const sender = spawnFixture(tt, 'sender', [ns, 0, DC, 32, 30, 3, 'async', 8]);
  await ready(sender);
  sender.send('go');
  const res = await within(sender.json(), 10000, 'the sender').catch(
    (e: Error) => `no answer: process state ${procState(sender.pid)} (${e.message.split(';')[0]})`,
  );
  tt.same(res, { sent: 3 }, 'a producer after the reaped claim completes its sends');
  sender.kill('SIGKILL');
  const got: number[] = [];
  for (;;) {
    try {
      const m = await sink.receive({ timeoutMs: 200 });
      got.push(new DataView(m.payload.buffer, m.payload.byteOffset, 8).getUint32(0, true));
      m.release();
    } catch {
      break;
    }
  }
  tt.same(got, [0, 1, 2], 'and its messages arrive');
});

t.test('a stale segment left by a killed creator is recovered', async (tt) => {
  const staleNs = `${ns}-stale`;
  const creator = spawnFixture(tt, 'holder', [staleNs, 0, DC, 7, 0]);
  await ready(creator);
  tt.same(await creator.json(), { held: 0, allocs: 5, classes: [2, 1, 1, 1] });
  tt.equal(await creator.line(), 'holding');
  creator.kill('SIGKILL');
  await creator.exit();
  tt.same(shmFiles(staleNs), [`dvs.${staleNs}.0`], 'the segment outlived its creator');
  const node = attach({ node: 0, namespace: staleNs });
  tt.equal(node.info().created, false, 'the existing segment was opened');
  tt.same(node.stats().procs.map((p) => p.pid), [process.pid], 'no leftover process');
  tt.same(node.stats().endpoints, [], 'no leftover endpoint');
  tt.same(inUse(node), zeros(node), 'no leftover block');
  const a = node.bind(DC, 7), b = node.bind(DC, 8);
  await a.send(8, 'works');
  const m = await b.receive({ timeoutMs: 5000 });
  tt.equal(m.text(), 'works');
  m.release();
  node.detach();
  assertNoShm(tt, staleNs);
});

t.test('nothing left behind', async (tt) => {
  assertNoShm(tt, ns);
  assertNoShm(tt, `${ns}-stale`);
});
