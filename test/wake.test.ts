// wake.test.ts — the ways an idle asynchronous waiter is woken: a doorbell
// socket polled by libuv (default) or a waiter thread, each with and without
// the adaptive polling that precedes sleeping (asyncSpinUs). Every mode must
// deliver every message and reply, including after long idle periods.
import t from 'tap';
import { attach, type AttachOptions } from '../lib/index.js';
import { assertNoShm, sleep, spawnFixture, tick, uniqueNs, within } from './helpers.js';

const ns = uniqueNs('wake');
const DC = 1;
const modes: { name: string; opts: AttachOptions; env: Record<string, string> }[] = [
  { name: 'doorbell', opts: { wake: 'doorbell' }, env: { DVS_TEST_WAKE: 'doorbell' } },
  { name: 'doorbell, no polling', opts: { wake: 'doorbell', asyncSpinUs: 0 }, env: { DVS_TEST_WAKE: 'doorbell', DVS_TEST_SPIN: '0' } },
  { name: 'thread', opts: { wake: 'thread' }, env: { DVS_TEST_WAKE: 'thread' } },
  { name: 'thread, no polling', opts: { wake: 'thread', asyncSpinUs: 0 }, env: { DVS_TEST_WAKE: 'thread', DVS_TEST_SPIN: '0' } },
];

modes.forEach(({ name, opts, env }, i) => {
  t.test(`wake-ups: ${name}`, async (tt) => {
    const node = attach({ node: 0, namespace: ns, ...opts });
    tt.teardown(() => node.detach());
    tt.equal(node.info().wake, opts.wake, 'the requested mode is in use');
    const me = node.bind(DC, 10 + i * 10);
    const srvEp = 11 + i * 10, sndEp = 12 + i * 10;

    // Calls to a server process in the same mode, one at a time (each waits).
    const srv = spawnFixture(tt, 'server', [ns, 0, DC, srvEp, 'echo'], env);
    tt.equal(await within(srv.line(), 30000, 'server ready'), 'ready');
    let ok = 0;
    for (let k = 0; k < 2000; k++) {
      const r = await within(me.call(srvEp, Uint8Array.from([k & 0xff]), { timeoutMs: 20000 }), 30000, `call ${k}`);
      if (r.payload[0] === ((k + 1) & 0xff)) ok++;
      r.release();
    }
    tt.equal(ok, 2000, 'sequential calls all answered');

    // After idle periods (the waiters are asleep, not polling).
    for (const idle of [50, 300]) {
      const p = me.receive({ timeoutMs: 20000 });
      await sleep(idle);
      const caller = node.bind(DC, sndEp + 100);
      await caller.send(me.ep, `after ${idle} ms`);
      const m = await within(p, 30000, 'a receive woken after idling');
      tt.equal(m.text(), `after ${idle} ms`, `woken after ${idle} ms of idling`);
      m.release();
      caller.close();
      const c = await within(me.call(srvEp, Uint8Array.from([41]), { timeoutMs: 20000 }), 30000, 'call after idling');
      tt.equal(c.payload[0], 42, 'a call after idling');
      c.release();
      await sleep(idle);
    }

    // A stream from another process into an async receiver.
    const N = 20000;
    const snd = spawnFixture(tt, 'sender', [ns, 0, DC, sndEp, me.ep, N, 'await', 16], env);
    tt.equal(await within(snd.line(), 30000, 'sender ready'), 'ready');
    snd.send('go');
    let next = 0, errors = 0;
    for await (const m of me) {
      const seq = new DataView(m.payload.buffer, m.payload.byteOffset, 8).getUint32(0, true);
      if (seq !== next) errors++;
      next = seq + 1;
      if (next === N) break;
    }
    tt.equal(errors, 0, 'the stream arrived in order');
    tt.same(await within(snd.json(), 30000, 'sender result'), { sent: N });
    (await me.call(srvEp, 'quit', { timeoutMs: 10000 })).release();
    tt.same(await srv.exit(), { code: 0, signal: null });
    tt.same(await snd.exit(), { code: 0, signal: null });
    await tick();
    tt.same(node.stats().classes.map((c) => c.inUse), node.stats().classes.map(() => 0), 'no block in use');
  });
});

t.test('nothing left behind', async (tt) => {
  assertNoShm(tt, ns);
});
