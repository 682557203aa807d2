// calls.test.ts — concurrent calls: several processes, each with many calls
// in flight, to one server process; every reply must answer its own request.
import t from 'tap';
import { attach } from '../lib/index.js';
import { assertNoShm, spawnFixture, tick, uniqueNs, within } from './helpers.js';

const ns = uniqueNs('calls');
const DC = 3;
const SERVER = 100;

interface CallerResult {
  ok: number;
  bad: number;
  errors: string[];
  maxInFlight: number;
}

t.test('pipelined calls from several processes to one server', async (tt) => {
  const node = attach({ node: 0, namespace: ns });
  tt.teardown(() => node.detach());
  const server = spawnFixture(tt, 'server', [ns, 0, DC, SERVER, 'echo']);
  tt.equal(await within(server.line(), 30000, 'server ready'), 'ready');

  // caller processes: [calls, window, size]; the last one keeps more calls in
  // flight than an endpoint has reply credits (256), so it must wait for credits.
  const plan: [number, number, number][] = [
    [5000, 64, 16],
    [5000, 32, 300],
    [3000, 16, 5000],
    [4000, 400, 24],
  ];
  const callers = plan.map(([calls, window, size], i) =>
    spawnFixture(tt, 'caller', [ns, 0, DC, 200 + i, SERVER, calls, window, size]),
  );
  for (const c of callers) tt.equal(await within(c.line(), 30000, 'caller ready'), 'ready');
  for (const c of callers) c.send('go');

  // Meanwhile this process calls too, with 100 calls in flight at a time.
  const me = node.bind(DC, 300);
  const local = (async () => {
    let ok = 0;
    const bad: string[] = [];
    for (let round = 0; round < 20; round++) {
      const reqs = Array.from({ length: 100 }, (_, i) => Uint8Array.from([round, i, 250, 255]));
      const replies = await Promise.all(reqs.map((r) => me.call(SERVER, r, { timeoutMs: 60000 })));
      replies.forEach((rep, i) => {
        const want = [round + 1, i + 1, 251, 0];
        if (rep.kind === 'reply' && rep.src === SERVER && [...rep.payload].join() === want.join()) ok++;
        else if (bad.length < 10) bad.push(`round ${round} call ${i}: ${[...rep.payload]}`);
        rep.release();
      });
    }
    return { ok, bad };
  })();

  const results = await within(
    Promise.all(callers.map((c) => c.json<CallerResult>(120000))),
    150000,
    'the callers to finish',
  );
  results.forEach((r, i) => {
    const [calls, window] = plan[i];
    tt.same(r.errors, [], `caller ${i}: no errors`);
    tt.equal(r.ok, calls, `caller ${i}: every reply matched its request`);
    tt.equal(r.bad, 0);
    tt.ok(r.maxInFlight > 1 && r.maxInFlight <= window, `caller ${i}: up to ${r.maxInFlight} calls in flight`);
  });
  const l = await within(local, 60000, 'local calls');
  tt.same(l.bad, []);
  tt.equal(l.ok, 2000, 'this process: every reply matched');
  for (const c of callers) tt.same(await c.exit(), { code: 0, signal: null }, 'caller exited cleanly');

  // The server saw exactly the calls that were made.
  const total = plan.reduce((s, p) => s + p[0], 0) + 2000;
  const st = await me.call(SERVER, 'stats', { timeoutMs: 10000 });
  tt.same(JSON.parse(st.text()), { calls: total + 1, oneway: 0 }, 'the server counted every call once');
  st.release();

  // Blocking calls from this process.
  for (let i = 0; i < 200; i++) {
    const r = me.callSync(SERVER, Uint8Array.from([i & 0xff, 1, 2]), { timeoutMs: 10000 });
    if ([...r.payload].join() !== [(i + 1) & 0xff, 2, 3].join()) tt.fail(`callSync ${i}: wrong reply ${[...r.payload]}`);
    r.release();
  }
  tt.pass('200 blocking calls answered correctly');

  const bye = await me.call(SERVER, 'quit', { timeoutMs: 10000 });
  tt.equal(bye.text(), 'bye');
  bye.release();
  tt.same(await server.exit(), { code: 0, signal: null }, 'server exited cleanly');
  await tick();
  tt.same(node.stats().classes.map((c) => c.inUse), node.stats().classes.map(() => 0), 'no block in use');
  tt.same(node.stats().procs.map((p) => p.pid), [process.pid], 'only this process is attached');
});

t.test('calls and one-way messages interleaved on one server', async (tt) => {
  const node = attach({ node: 0, namespace: ns });
  tt.teardown(() => node.detach());
  const server = spawnFixture(tt, 'server', [ns, 0, DC, SERVER + 1, 'echo']);
  tt.equal(await within(server.line(), 30000, 'server ready'), 'ready');
  const me = node.bind(DC, 301);
  const calls: Promise<unknown>[] = [];
  for (let i = 0; i < 1000; i++) {
    await me.send(SERVER + 1, 'one-way');
    calls.push(
      me.call(SERVER + 1, Uint8Array.from([i & 0xff]), { timeoutMs: 30000 }).then((r) => {
        const v = r.payload[0];
        r.release();
        return v;
      }),
    );
  }
  const got = await within(Promise.all(calls), 60000, 'calls');
  tt.same(got, Array.from({ length: 1000 }, (_, i) => (i + 1) & 0xff), 'replies in request order of ids');
  const st = await me.call(SERVER + 1, 'stats', { timeoutMs: 10000 });
  tt.same(JSON.parse(st.text()), { calls: 1001, oneway: 1000 });
  st.release();
  (await me.call(SERVER + 1, 'quit', { timeoutMs: 10000 })).release();
  tt.same(await server.exit(), { code: 0, signal: null });
});

t.test('nothing left behind', async (tt) => {
  assertNoShm(tt, ns);
});
