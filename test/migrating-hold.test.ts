// migrating-hold.test.ts — the MIGRATING mark on an endpoint's slot (the
// START of a migration): senders into it wait as for a full inbox, with the
// async and the sync API, on the server's node and through a proxy on another
// node; nothing fails (only the sender's own timeout ends a wait); clearing
// the mark releases them and every message arrives, in order. Notifications
// are not held. Two embedded agents in this process.
import t from 'tap';
import { attach, startAgent, type Agent } from '../lib/index.js';
import { silentLogger } from '../lib/agent/log.js';
import { codeOf, shmFiles, sleep, uniqueNs, within } from './helpers.js';
import { engineOf, freeUdpPorts, until } from './cluster-helpers.js';

const DC = 1;



t.test('senders into a migrating endpoint wait, then go on in order', async (tt) => {
  const ns = uniqueNs('hold');
  const [p1, p2] = await freeUdpPorts(2);
  const a1 = await startAgent({ node: 1, listen: { host: '127.0.0.1', port: p1 }, peers: [{ node: 2, host: '127.0.0.1', port: p2 }], namespace: ns }, silentLogger);
  const a2 = await startAgent({ node: 2, listen: { host: '127.0.0.1', port: p2 }, peers: [{ node: 1, host: '127.0.0.1', port: p1 }], namespace: ns }, silentLogger);
  tt.teardown(async () => {
    await a1.stop();
    await a2.stop();
  });
  await a1.waitForPeers();
  await a2.waitForPeers();
  const n1 = attach({ node: 1, namespace: ns });
  const n2 = attach({ node: 2, namespace: ns });
  tt.teardown(() => {
    n1.detach();
    n2.detach();
  });
  const server = n2.bind(DC, 10);
  const local = n2.bind(DC, 11);
  const remote = n1.bind(DC, 12);
  await until('node 1 to learn endpoint 10', () => a1.ps().some((e) => e.ep === 10 && e.where === 'remote'));

  tt.equal(await codeOf(() => engineOf(a2).setMigrating(DC, 99, true)), 'EDVSNOTBIND', 'marking an endpoint that is not bound: EDVSNOTBIND');
  tt.equal(await codeOf(() => engineOf(a2).setMigrating(DC, -1, true)), 'EDVSINVAL', 'a bad endpoint number: EDVSINVAL');

  // START: the server's slot on node 2 and the proxy on node 1.
  engineOf(a2).setMigrating(DC, 10, true);
  engineOf(a1).setMigrating(DC, 10, true);
  const sends: Promise<void>[] = [];
  for (let i = 0; i < 20; i++) sends.push(local.send(10, `L${i}`), remote.send(10, `R${i}`));
  const call = local.call(10, 'Lcall', { timeoutMs: 20000 });
  let settled = 0;
  for (const p of sends) void p.then(() => settled++, () => settled++);
  tt.equal(local.trySend(10, 'try'), false, 'trySend into a migrating endpoint: false (not accepted now), no error');
  tt.equal(await codeOf(local.send(10, 'short', { timeoutMs: 100 }), 5000), 'EDVSTIMEDOUT', "only the sender's own timeout ends the wait");
  const syncSender = n2.bind(DC, 13);
  const syncCode = await codeOf(() => syncSender.sendSync(10, 'sync', { timeoutMs: 100 }));
  syncSender.close();
  tt.equal(syncCode, 'EDVSTIMEDOUT', 'the sync API waits too (and times out on its own timeout)');
  await sleep(300);
  tt.equal(settled, 0, 'while marked, no send has completed or failed');
  await tt.rejects(server.receive({ timeoutMs: 0 }), { code: 'EDVSAGAIN' }, 'and nothing reached the server');
  // Notifications are not held.
  remote.notify(10, 4);
  const note = await server.receive({ timeoutMs: 5000 });
  tt.same([note.kind, note.src], ['notify', 12], 'a notification goes through while marked');
  note.release();

  // COMMIT: clear the marks; everything goes through, in order per sender.
  engineOf(a1).setMigrating(DC, 10, false);
  engineOf(a2).setMigrating(DC, 10, false);
  await within(Promise.all(sends), 10000, 'the held sends');
  tt.pass('after the mark clears every held send completes');
  const got: string[] = [];
  let callMsg = null;
  while (got.length < 40 || !callMsg) {
    const m = await server.receive({ timeoutMs: 5000 });
    if (m.kind === 'call') callMsg = m;
    else {
      got.push(m.text());
      m.release();
    }
  }
  callMsg.reply('ok');
  callMsg.release();
  tt.equal((await call).text(), 'ok', 'the held call completes');
  const L = got.filter((x) => x.startsWith('L')), R = got.filter((x) => x.startsWith('R'));
  tt.same(L, Array.from({ length: 20 }, (_, i) => `L${i}`), 'the local sender\'s messages arrive once each, in order');
  tt.same(R, Array.from({ length: 20 }, (_, i) => `R${i}`), 'the remote sender\'s messages arrive once each, in order');
  tt.equal(local.trySend(10, 'after'), true, 'trySend is accepted again');

  for (const e of [server, local, remote]) e.close();
  n1.detach();
  n2.detach();
  await a1.stop();
  await a2.stop();
  await sleep(50);
  tt.same(shmFiles(ns), [], 'no segment left');
});
