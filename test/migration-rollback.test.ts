// migration-rollback.test.ts — migrations that must not happen, and those
// that fail half-way (issue 5), on three `dvs agent` child processes with the
// mig-kv service and clients calling and sending sequenced one-way messages
// throughout:
//   refusals, with no effect: a destination outside the DC (EDVSNODCNODE), an
//     unknown endpoint (EDVSNOTBIND), a second migration of an endpoint that
//     is migrating (EDVSBUSY), a backend that does not exist yet (EDVSNOSYS),
//     a plain endpoint that is not a dvs service;
//   rollbacks: the quiesce times out (the service is busy longer than allowed),
//     restore() throws at the destination, the destination's agent is killed
//     while the destination restores — each time the service keeps serving at
//     its source (same process, same state) and no client sees an error, a
//     loss, a duplicate or a reordering; a migration afterwards succeeds;
//   the source's agent dies during the migration: the other nodes let their
//     held senders go (they fail as calls to a dead node do), the destination
//     drops its process, nothing stays in progress.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { MigrationsList } from '../lib/migration/index.js';
import { codeOf, sleep, uniqueNs } from './helpers.js';
import { ask, checkClients, DC, locations, migrate, SERVICE_EP, startClients, startMigCluster, startService, stopClients } from './migration-helpers.js';

t.test('refusals and rollbacks: the service keeps serving at its source, clients see nothing', async (tt) => {
  const mc = await startMigCluster(tt, uniqueNs('migrb'), { deadAfterMs: 600, dcs: '1:1,2,3;2:1,2' });
  const svc = await startService(tt, mc, 1);
  await ask(mc, { op: 'set', k: 'canary', v: 'sylvester' });
  const home = await ask<{ pid: number; hops: number }>(mc, { op: 'where' });
  tt.equal(home.pid, svc.pid, 'served by the process started on node 1');
  const unchanged = async (what: string): Promise<void> => {
    const w = await ask<{ pid: number; hops: number }>(mc, { op: 'where' });
    const c = await ask<{ v: string }>(mc, { op: 'get', k: 'canary' });
    tt.same([w.pid, w.hops, c.v], [home.pid, 0, 'sylvester'], `${what}: still served by the source's process, state as it was`);
    tt.same(await locations(mc), [1, 1, 1], `${what}: every node's directory still names node 1`);
  };
  let clients = await startClients(tt, mc, [3, 3, 2]);

  // ---- refusals (nothing changes)
  tt.equal(await codeOf(migrate(mc, 2, 3, { ep: 77 })), 'EDVSNOTBIND', 'an endpoint bound nowhere: EDVSNOTBIND');
  tt.equal(await codeOf(mc.clusters[2].migrate({ dc: DC, ep: SERVICE_EP, to: 5 })), 'EDVSNODCNODE', 'a destination outside the DC (node 5 is not in DC 1): EDVSNODCNODE');
  tt.equal(await codeOf(mc.clusters[0].migrate({ dc: DC, ep: SERVICE_EP, to: 2, method: 'criu' })), 'EDVSNOSYS', "method 'criu': EDVSNOSYS (not available yet)");
  tt.equal(await codeOf(mc.clusters[0].migrate({ dc: DC, ep: SERVICE_EP, to: 2, method: 'ptrace' })), 'EDVSNOSYS', "method 'ptrace': EDVSNOSYS");
  tt.equal(await codeOf(mc.clusters[0].migrate({ dc: DC, ep: SERVICE_EP, to: 1 })), 'EDVSINVAL', 'to the node it is on: EDVSINVAL');
  // DC 2 spans nodes 1 and 2 only: its service cannot go to node 3, which is up and in DC 1.
  await startService(tt, mc, 1, 11, 2);
  tt.equal(await codeOf(mc.clusters[0].migrate({ dc: 2, ep: 11, to: 3 })), 'EDVSNODCNODE', 'a destination outside the DC (node 3, DC 2 = nodes 1, 2): EDVSNODCNODE');
  tt.equal(mc.clusters[2].locate(2, 11)?.node, 1, 'that service stays on node 1');
  // A plain endpoint (no dvs serve): not migratable.
  const plain = mc.node.bind(DC, 50);
  await Promise.all(mc.clusters.map((c) => c.waitForBind(DC, 50, { timeoutMs: 10000 })));
  tt.equal(await codeOf(migrate(mc, 3, 2, { ep: 50 })), 'EDVSINVAL', 'an endpoint that is not a dvs service: EDVSINVAL');
  plain.close();
  await unchanged('after the refusals');

  // ---- EDVSBUSY: a second migration while the first one restores (slowly) at the destination
  const marker = join(tmpdir(), `dvs-migrb-${process.pid}.marker`);
  rmSync(marker, { force: true });
  tt.teardown(() => rmSync(marker, { force: true }));
  await ask(mc, { op: 'mode', restore: 'slow', ms: 1500, marker });
  const firstMig = migrate(mc, 1, 2);
  while (!existsSync(marker)) await sleep(10);
  const second = await Promise.all([codeOf(migrate(mc, 3, 3)), codeOf(migrate(mc, 2, 3))]);
  tt.same(second, ['EDVSBUSY', 'EDVSBUSY'], 'a second migration of the endpoint while one runs (asked of node 3 and of the destination): EDVSBUSY');
  const r1 = await firstMig;
  tt.same([r1.state, r1.from, r1.to], ['committed', 1, 2], 'the first migration commits');
  await ask(mc, { op: 'mode' });
  const back = await migrate(mc, 3, 1);
  tt.same([back.state, back.to], ['committed', 1], 'and back to node 1');
  rmSync(marker, { force: true });
  const home2 = await ask<{ pid: number; hops: number }>(mc, { op: 'where' });
  home.pid = home2.pid;
  tt.equal(home2.hops, 2, 'two hops counted');
  await ask(mc, { op: 'set', k: 'hops-before', v: '2' });
  const unchanged2 = async (what: string): Promise<void> => {
    const w = await ask<{ pid: number; hops: number }>(mc, { op: 'where' });
    tt.same([w.pid, w.hops], [home.pid, 2], `${what}: still served by the source's process, state as it was`);
    tt.same(await locations(mc), [1, 1, 1], `${what}: every node's directory still names node 1`);
  };

  // ---- rollback 1: the quiesce times out (the service is in a 3 s call; 300 ms allowed)
  const busy = ask(mc, { op: 'sleep', ms: 3000 });
  await sleep(50);
  const e1 = await migrate(mc, 2, 3, { quiesceTimeoutMs: 300 }).then(
    () => null,
    (e: Error & { code?: string }) => e,
  );
  tt.equal(e1?.code, 'EDVSTIMEDOUT', `quiesce timeout: the migration fails with EDVSTIMEDOUT (${e1?.message})`);
  tt.match(e1?.message ?? '', /rolled back/, 'and says it rolled back');
  tt.same(await busy, { slept: 3000 }, 'the long call is answered by the source');
  await unchanged2('after a quiesce timeout');

  // ---- rollback 2: restore() throws at the destination
  await ask(mc, { op: 'mode', restore: 'throw' });
  const e2 = await migrate(mc, 1, 3).then(
    () => null,
    (e: Error & { code?: string }) => e,
  );
  tt.ok(e2 && /rolled back/.test(e2.message) && /restore\(\) refuses|restore/.test(e2.message), `restore() throws: the migration fails, rolled back (${e2?.code}: ${e2?.message})`);
  await unchanged2('after restore() threw');
  await ask(mc, { op: 'mode' });
  const list = await mc.agents[0].request<MigrationsList>('migrations');
  tt.same(
    list.records.filter((r) => r.from === 1).map((r) => r.state),
    ['committed', 'rolled back', 'rolled back'],
    'the source recorded its migrations: committed, then the two rollbacks',
  );
  tt.same(list.active, [], 'nothing in progress at the source');

  let reports = await stopClients(clients);
  checkClients(tt, reports, 'refusals, busy and two rollbacks');

  // ---- rollback 3: the destination's agent dies while the destination restores (clients on the surviving nodes)
  clients = await startClients(tt, mc, [3, 0, 3]);
  await ask(mc, { op: 'mode', restore: 'slow', ms: 30000, marker });
  const mig3 = migrate(mc, 3, 2).then(
    () => null,
    (e: Error & { code?: string }) => e,
  );
  while (!existsSync(marker)) await sleep(10);
  const orphan = Number(readFileSync(marker, 'utf8'));
  mc.pids.add(orphan);
  mc.agents[1].child.kill('SIGKILL');
  const e3 = await mig3;
  tt.ok(e3 && /rolled back/.test(e3.message), `destination agent killed during restore: the migration fails, rolled back (${e3?.code}: ${e3?.message})`);
  const w3 = await ask<{ pid: number; hops: number }>(mc, { op: 'where' });
  tt.same([w3.pid, w3.hops], [home.pid, 2], 'still served by the source process, state as it was');
  // The half-restored process on the dead node does not linger.
  const deadline = Date.now() + 15000;
  let alive = true;
  while (alive && Date.now() < deadline) {
    try {
      process.kill(orphan, 0);
      await sleep(50);
    } catch {
      alive = false;
    }
  }
  tt.notOk(alive, 'the destination process exits once its agent is gone');
  await ask(mc, { op: 'mode' });
  const after = await migrate(mc, 1, 3);
  tt.same([after.state, after.from, after.to], ['committed', 1, 3], 'a migration to the third node then succeeds');
  const w4 = await ask<{ pid: number; hops: number }>(mc, { op: 'where' });
  tt.same([w4.pid, w4.hops], [after.pid, 3], 'served by the new process, state intact');
  reports = await stopClients(clients);
  checkClients(tt, reports, 'destination killed, then a migration');
});

t.test('the source dies during the migration: every node lets its senders go, the destination drops its process', async (tt) => {
  const ns = uniqueNs('migsrc');
  const mc = await startMigCluster(tt, ns, { deadAfterMs: 600 });
  // Node 2's agent is SIGKILLed below: nobody is left to remove its arena (its processes are all dead).
  const dropArena2 = (): void => rmSync(`/dev/shm/dvs.${ns}.2`, { force: true });
  tt.teardown(async () => {
    await sleep(200);  // after the other teardowns' kills have landed
    dropArena2();
  });
  const svc = await startService(tt, mc, 2);
  const marker = join(tmpdir(), `dvs-migsrc-${process.pid}.marker`);
  rmSync(marker, { force: true });
  tt.teardown(() => rmSync(marker, { force: true }));
  await ask(mc, { op: 'mode', restore: 'slow', ms: 30000, marker });
  const mig = migrate(mc, 1, 3).then(
    () => null,
    (e: Error & { code?: string }) => e,
  );
  while (!existsSync(marker)) await sleep(10);
  const standby = Number(readFileSync(marker, 'utf8'));
  mc.pids.add(standby);
  // Node 1's sender is held now (its proxy is marked): it must not stay held once the source is gone.
  const held = mc.probe.call(SERVICE_EP, JSON.stringify({ op: 'get', k: 'x' }), { timeoutMs: 30000 }).then(
    (m) => (m.release(), 'answered'),
    (e: Error & { code?: string }) => e.code ?? e.message,
  );
  await sleep(100);
  mc.agents[1].child.kill('SIGKILL');
  svc.kill('SIGKILL');
  const e = await mig;
  tt.equal(e?.code, 'EDVSNOTCONN', `asked of node 1: the migration fails with EDVSNOTCONN, its outcome unknown there (${e?.message})`);
  tt.equal(await held, 'EDVSNOTCONN', 'the held call is let go and fails as any call to a dead node does (EDVSNOTCONN), instead of waiting');
  const deadline = Date.now() + 15000;
  let alive = true;
  while (alive && Date.now() < deadline) {
    try {
      process.kill(standby, 0);
      await sleep(50);
    } catch {
      alive = false;
    }
  }
  tt.notOk(alive, "the destination's standby process is gone");
  const active = await Promise.all([mc.agents[0], mc.agents[2]].map((a) => a.request<MigrationsList>('migrations').then((l) => l.active)));
  tt.same(active, [[], []], 'nothing left in progress on the surviving nodes');
  dropArena2();
});
