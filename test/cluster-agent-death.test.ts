// cluster-agent-death.test.ts — a node agent killed with SIGKILL: callers on
// the other node waiting on a server behind it get EDVSNOTCONN once the link
// is declared dead (--dead-after-ms), and after the agent is restarted (same
// port, same namespace) the server process, still running and bound, is
// reachable again.
import t from 'tap';
import { attach } from '../lib/index.js';
import { shmFiles, spawnFixture, uniqueNs, within } from './helpers.js';
import { AgentProc, retryWhile, startCluster, waitPeersUp, waitRemote } from './cluster-helpers.js';

const DC = 1;
const codeOf = (e: unknown): string => (e as { code?: string })?.code ?? String(e);

t.test('SIGKILLed agent: waiting callers get EDVSNOTCONN in bounded time; a restarted agent serves again', async (tt) => {
  const ns = uniqueNs('cl-death');
  const DEAD_AFTER = 1000;
  const [a1, a2] = await startCluster(tt, ns, [1, 2], { deadAfterMs: DEAD_AFTER });
  const srv = spawnFixture(tt, 'cluster-server', [ns, 2, DC, 20, 3]);
  tt.equal(await within(srv.line(), 30000, 'server ready'), 'ready');
  await waitRemote(a1, DC, 20);

  const n1 = attach({ node: 1, namespace: ns });
  tt.teardown(() => n1.detach());
  const me = n1.bind(DC, 40);
  const calls = [0, 1, 2].map((i) => me.call(20, `q${i}`).then(() => 'resolved', (e: unknown) => e));
  for (let i = 1; i <= 3; i++) tt.same(await within(srv.json(), 10000, 'the server got a call'), { held: i });

  a2.child.kill('SIGKILL');
  const t0 = Date.now();
  const results = await within(Promise.all(calls), 5000 + DEAD_AFTER, 'the waiting callers to be told');
  const elapsed = Date.now() - t0;
  tt.same(results.map(codeOf), ['EDVSNOTCONN', 'EDVSNOTCONN', 'EDVSNOTCONN'], 'every waiting call failed with EDVSNOTCONN');
  tt.ok(elapsed < DEAD_AFTER + 4000, `the callers were told after ${elapsed} ms (dead-after ${DEAD_AFTER} ms)`);
  tt.equal((await a2.child.exit()).signal, 'SIGKILL');
  await tt.rejects(me.call(20, 'while down', { timeoutMs: 5000 }), { code: 'EDVSNOTCONN' }, 'a new call while node 2 is down: EDVSNOTCONN');
  tt.notOk(srv.exited, 'the server process on node 2 is still running');

  // Restart node 2's agent on the same port and namespace.
  const a2b = await new AgentProc(tt, a2.opts).start();
  await waitPeersUp(a2b);
  await waitPeersUp(a1);
  const r = await retryWhile(() => me.call(20, Uint8Array.from([1, 2, 3]), { timeoutMs: 5000 }), ['EDVSNOTCONN', 'EDVSNOTBIND'], 15000, 'a call after the restart');
  tt.same([...r.payload], [2, 3, 4], 'the same server answers through the restarted agent');
  r.release();
  const more = await within(
    Promise.all(Array.from({ length: 200 }, (_, i) => me.call(20, Uint8Array.from([i & 0xff]), { timeoutMs: 10000 }).then((m) => {
      const v = m.payload[0];
      m.release();
      return v;
    }))),
    20000,
    '200 calls after the restart',
  );
  tt.same(more, Array.from({ length: 200 }, (_, i) => (i + 1) & 0xff), '200 more calls answered correctly');
  tt.equal(srv.pid, (await a1.request<{ endpoints: { ep: number; pid: number; where: string }[] }>('ps')).endpoints.find((e) => e.ep === 20)?.pid, 'node 1 sees the same server process');

  const bye = await me.call(20, 'quit', { timeoutMs: 10000 });
  tt.equal(bye.text(), 'bye');
  bye.release();
  tt.same(await srv.exit(), { code: 0, signal: null }, 'the server exited cleanly');
  n1.detach();
  tt.same(await a1.stop(), { code: 0, signal: null });
  tt.same(await a2b.stop(), { code: 0, signal: null });
  tt.same(shmFiles(ns), [], 'no segment left');
});
