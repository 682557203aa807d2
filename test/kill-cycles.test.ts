// kill-cycles.test.ts — 1000 processes, one after the other (8 at a time),
// attach, bind, allocate, send and get SIGKILLed — some during start-up or
// attach, some holding their blocks, some in the middle of a stream of
// operations. Afterwards nothing may be left: no block in use, no endpoint
// but the test's own, no process but the test itself; and the node works.
import t from 'tap';
import { attach, type DvsError, type Node } from '../lib/index.js';
import { assertNoShm, procState, ready, sleep, spawnFixture, tick, uniqueNs, within, type T } from './helpers.js';

const ns = uniqueNs('cycles');
const DC = 1;

const inUse = (node: Node): number[] => node.stats().classes.map((c) => c.inUse);
const zeros = (node: Node): number[] => node.stats().classes.map(() => 0);
const codeOf = (e: unknown): string => (e as DvsError)?.code ?? String(e);

function setup(tt: T): Node {
  const node = attach({ node: 0, namespace: ns });
  tt.teardown(() => node.detach());
  return node;
}

t.test('1000 kill cycles', async (tt) => {
  // $DVS_TEST_CYCLES overrides the count (e.g. for a quick local run).
  const CYCLES = Number(process.env.DVS_TEST_CYCLES ?? 1000);
  const WAVE = 8;
  const node = setup(tt);
  const sink = node.bind(DC, 5);
  let received = 0;
  let draining = true;
  const drain = (async () => {
    while (draining) {
      try {
        const m = await sink.receive({ timeoutMs: 100 });
        void m.payload[0];
        m.release();
        received++;
      } catch (e) {
        if (codeOf(e) !== 'EDVSTIMEDOUT') throw e;
      }
    }
  })();
  tt.teardown(() => {
    draining = false;
  });

  const t0 = Date.now();
  let killedEarly = 0, killedBusy = 0, killedHolding = 0, failed = 0;
  const failures: string[] = [];
  let rnd = 12345;
  const random = (n: number) => {
    rnd = (Math.imul(rnd, 1103515245) + 12345) >>> 0;
    return (rnd >>> 8) % n;
  };
  // WAVE slots, each running its children one after the other (a slot's
  // endpoint is reused by its next child once the previous one is dead), so
  // that a slow child never holds up the others.
  let next = 0;
  const slot = async (k: number): Promise<void> => {
    while (next < CYCLES && !failed) {
      const i = next++;
      const kind = i % 5 === 4 ? 'early' : i % 4 === 1 ? 'busy' : 'holding';
      const c = spawnFixture(tt, 'cycler', [ns, 0, DC, 1000 + k, 5, ...(kind === 'busy' ? ['busy'] : [])]);
      try {
        if (kind === 'early') {
          // Somewhere during start-up, attach or bind.
          await sleep(20 + random(150));
          killedEarly++;
        } else {
          const l = await within(c.line(), 30000, 'holding');
          if (l !== 'holding') throw new Error(`unexpected line ${l}`);
          if (kind === 'busy') {
            await sleep(random(20));
            killedBusy++;
          } else killedHolding++;
        }
      } catch (e) {
        failed++;
        if (failures.length < 5)
          failures.push(`child ${i} (${kind}): ${(e as Error).message}; process state: ${procState(c.pid)}; stderr: ${c.stderr}`);
      }
      c.kill('SIGKILL');
      await c.exit(10000);
    }
  };
  await within(Promise.all(Array.from({ length: WAVE }, (_, k) => slot(k))), 200000, `${CYCLES} cycles`);
  tt.same(failures, [], 'every child reached its point');
  tt.comment(
    `${CYCLES} cycles in ${Date.now() - t0} ms: ${killedEarly} early, ${killedHolding} holding, ${killedBusy} busy; ${received} messages received`,
  );
  node.reap();
  // Drain what the children sent.
  await sleep(200);
  draining = false;
  await within(drain, 10000, 'the drain loop');
  for (;;) {
    try {
      const m = await sink.receive({ timeoutMs: 0 });
      m.release();
      received++;
    } catch {
      break;
    }
  }
  tt.ok(received >= killedHolding, `the children's messages arrived (${received})`);
  await tick();
  const st = node.stats();
  tt.same(inUse(node), zeros(node), 'no payload block in use');
  tt.same(st.endpoints.map((e) => [e.dc, e.ep, e.pid]), [[DC, 5, process.pid]], 'only this process\'s endpoint is bound');
  tt.same(st.procs.map((p) => p.pid), [process.pid], 'only this process is attached');
  tt.comment(`reapedProcs ${st.reapedProcs}, lockRecoveries ${st.lockRecoveries}, droppedReplies ${st.droppedReplies}`);
  // And the node still works: a new process can send to the sink (from a
  // child, so that a wedged mailbox cannot hang this process).
  const after = spawnFixture(tt, 'sender', [ns, 0, DC, 6, 5, 3, 'async', 8]);
  await ready(after);
  after.send('go');
  tt.same(await within(after.json(), 20000, 'a sender after the storm').catch((e: Error) => e.message), { sent: 3 },
    'a new sender gets through');
  for (let i = 0; i < 3; i++) {
    const m = await sink.receive({ timeoutMs: 5000 });
    tt.equal(m.src, 6);
    m.release();
  }
});

t.test('nothing left behind', async (tt) => {
  assertNoShm(tt, ns);
});
