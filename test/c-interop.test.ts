// c-interop.test.ts — C programs built on the plain C library (no Node.js)
// and Node processes share one node: Node calls a C service, a C client calls
// a Node service, payloads cross intact in both directions.
import { join } from 'node:path';
import t from 'tap';
import { attach } from '../lib/index.js';
import { assertNoShm, buildC, fnv1a, missingCTools as missing, pattern, spawnExe, spawnFixture, tick, uniqueNs, within } from './helpers.js';

const ns = uniqueNs('cinterop');
const DC = 2;

t.test('C and Node processes on one node', { skip: missing.length ? `${missing.join(', ')} not installed` : false }, async (tt) => {
  const built = buildC();
  if (!built.dir) {
    tt.fail(built.error!);
    return;
  }
  const bin = built.dir;
  const node = attach({ node: 0, namespace: ns });
  tt.teardown(() => node.detach());
  const me = node.bind(DC, 11);

  tt.test('Node calls the C service (examples/c_server.c)', async (t2) => {
    const srv = spawnExe(t2, join(bin, 'c_server'), [0, DC, 10, '--ns', ns]);
    t2.equal(await within(srv.line(), 30000, 'c_server ready'), 'ready');
    t2.ok(node.stats().endpoints.some((e) => e.ep === 10 && e.pid === srv.pid), 'the C process bound endpoint 10');
    const call = async (req: string | Uint8Array): Promise<string> => {
      const r = await within(me.call(10, req, { timeoutMs: 10000 }), 20000, 'call to c_server');
      const s = r.text();
      r.release();
      return s;
    };
    t2.equal(await call('upper:hello'), 'HELLO');
    const oneway = 7;
    for (let i = 0; i < oneway; i++) await me.send(10, `one-way ${i}`);
    t2.equal(await call('count'), `2/${oneway}`, 'count: calls served / one-way messages');
    // Echo of binary data, and a zero-copy request.
    const bytes = pattern(3000, 9);
    const echo = await within(me.call(10, bytes, { timeoutMs: 10000 }), 20000, 'echo');
    t2.equal(fnv1a(echo.payload), fnv1a(bytes), 'binary payload echoed intact');
    echo.release();
    const z = me.alloc(12);
    z.set(new TextEncoder().encode('upper:zero!?'));
    t2.equal(await call(z), 'ZERO!?', 'zero-copy request');
    // Many calls in flight.
    const many = await within(
      Promise.all(Array.from({ length: 500 }, (_, i) => call(`upper:abc${i}`))),
      60000,
      '500 pipelined calls',
    );
    t2.same(many, Array.from({ length: 500 }, (_, i) => `ABC${i}`), 'every reply matches its request');
    t2.equal(await call('count'), `${2 + 2 + 500 + 1}/${oneway}`);
    t2.equal(await call('quit'), 'bye');
    t2.same(await srv.exit(10000), { code: 0, signal: null }, 'c_server exited 0');
    await t2.rejects(me.send(10, 'x'), { code: 'EDVSNOTBIND' }, 'its endpoint was closed');
  });

  tt.test('Node calls a C echo server with payloads up to 1 MiB (examples/c_pingpong.c)', async (t2) => {
    const srv = spawnExe(t2, join(bin, 'c_pingpong'), ['server', 0, DC, 12], { DVS_NAMESPACE: ns });
    t2.equal(await within(srv.line(), 30000, 'c_pingpong server ready'), 'ready');
    for (const size of [0, 1, 255, 256, 4097, 65536, 1 << 20]) {
      const req = pattern(size, size + 3);
      const r = await within(me.call(12, req, { timeoutMs: 10000 }), 20000, `call of ${size} bytes`);
      t2.equal(r.length, size);
      t2.equal(fnv1a(r.payload), fnv1a(req), `${size} bytes echoed intact`);
      r.release();
    }
    // An empty one-way message stops it. (The send may wrongly report
    // EDVSDSTDIED when the server consumes it and exits at once: see the
    // 'counts as delivered' test below.)
    await me.send(12).catch((e: { code?: string }) => (e.code === 'EDVSDSTDIED' ? undefined : Promise.reject(e)));
    t2.same(await srv.exit(10000), { code: 0, signal: null }, 'c_pingpong server exited 0');
  });

  tt.test('a C client calls a Node service', async (t2) => {
    const srv = spawnFixture(t2, 'server', [ns, 0, DC, 13, 'echo']);
    t2.equal(await within(srv.line(), 30000, 'server ready'), 'ready');
    const cli = spawnExe(t2, join(bin, 'c_pingpong'), ['client', 0, DC, 14, 13, 2000, 100], { DVS_NAMESPACE: ns });
    const out = await within(cli.line(60000), 90000, 'c_pingpong client');
    t2.match(out, /^rtt_p50_us=[\d.]+ rtt_p99_us=[\d.]+ iterations=2000 size=100$/, 'the C client completed its calls');
    t2.same(await cli.exit(10000), { code: 0, signal: null }, 'c_pingpong client exited 0');
    const st = await me.call(13, 'stats', { timeoutMs: 10000 });
    t2.same(JSON.parse(st.text()), { calls: 3001, oneway: 1 }, 'the Node server saw 1000 + 2000 calls and the final one-way');
    st.release();
    (await me.call(13, 'quit', { timeoutMs: 10000 })).release();
    t2.same(await srv.exit(10000), { code: 0, signal: null });
  });

  tt.test('a message consumed by a receiver that then closes counts as delivered', async (t2) => {
    // c_pingpong's server exits as soon as it receives a one-way message: the
    // send was accepted and consumed, so it must resolve — a sender told
    // EDVSDSTDIED would think it was lost and send it again (a duplicate).
    const results: Record<string, number> = {};
    for (let i = 0; i < 200; i++) {
      const srv = spawnExe(t2, join(bin, 'c_pingpong'), ['server', 0, DC, 15], { DVS_NAMESPACE: ns });
      const line = await within(srv.line(), 30000, 'c_pingpong server ready');
      if (line !== 'ready') t2.fail(`server ${i}: ${line}`);
      const r = await me.send(15, i % 2 ? 'stop' : undefined).then(
        () => 'resolved',
        (e: { code?: string }) => e.code ?? String(e),
      );
      results[r] = (results[r] ?? 0) + 1;
      const ex = await srv.exit(10000);
      if (ex.code !== 0) t2.fail(`server ${i} exited ${ex.code ?? ex.signal}`);
    }
    t2.same(results, { resolved: 200 }, 'every one of 200 delivered sends resolved');
  });

  tt.test('afterwards', async (t2) => {
    await tick();
    t2.same(node.stats().classes.map((c) => c.inUse), node.stats().classes.map(() => 0), 'no payload block in use');
    t2.same(node.stats().procs.map((p) => p.pid), [process.pid], 'only this process is attached');
    t2.same(node.stats().endpoints.map((e) => e.ep), [11], 'only this process\'s endpoint is bound');
  });
});

t.test('nothing left behind', async (tt) => {
  assertNoShm(tt, ns);
});
