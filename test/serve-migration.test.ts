// serve-migration.test.ts — the runtime's side of a migration, with the test
// playing the agents' side: two embedded agents in this process whose control
// handlers hand the runtime's requests to the test (serve-helpers.ts
// RuntimeRequests), which drives the native primitives itself (marks, fences,
// expectReplies, adopt, toProxy) and pushes the steps to real `dvs serve`
// processes. Clients on both nodes keep sending sequenced one-way messages and
// calls throughout. Checked: rollback after the image (the drained messages
// handled first), quiesce failures (missing fence, busy handler, snapshot
// throws, a second migration) resume by themselves, commits back and forth
// with --restore and --standby destinations (state intact, old runtime exits
// 0 without unbinding), restore() throwing at the destination, a stateless
// service; in every case nothing lost, duplicated or reordered, no client error.
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import t, { type Test } from 'tap';
import { attach, startAgent, type Agent, type Endpoint, type Node } from '../lib/index.js';
import { silentLogger } from '../lib/agent/log.js';
import type { ControlConnection } from '../lib/agent/control.js';
import { decodeImage, imageExpectedReplies, type ServiceImage } from '../lib/serve/image.js';
import { engineOf, freeUdpPorts, until } from './cluster-helpers.js';
import { fixturePath, ROOT, shmFiles, sleep, uniqueNs, within } from './helpers.js';
import { callJson, checkKv, imagesOf, KvClient, RuntimeRequests, ServeProc } from './serve-helpers.js';

const KV = resolve(ROOT, 'examples', 'kv.js');
const DC = 1;
const EP = 10;
let nextId = 1000;

interface Setup {
  ns: string;
  agents: Agent[];
  nodes: Node[];
  rq: RuntimeRequests;
}

/** Two embedded agents (nodes 1 and 2) whose runtime requests go to the test, and an attachment to each node. */
async function setup(tt: Test, name: string): Promise<Setup> {
  const ns = uniqueNs(name);
  const ports = await freeUdpPorts(2);
  const agents: Agent[] = [];
  // Teardowns run last-registered first: the serve children (SIGKILLed if a check failed) and this
  // process's attachments are gone by now; reap the children before the agents stop, so that no
  // segment outlives a failed run.
  tt.teardown(async () => {
    for (const a of agents) {
      try {
        engineOf(a).reap();
      } catch {
        /* stopped already */
      }
    }
    for (const a of agents) await a.stop();
  });
  for (let i = 0; i < 2; i++) {
    const peers = ports.map((port, j) => ({ node: j + 1, host: '127.0.0.1', port })).filter((p) => p.node !== i + 1);
    agents.push(await startAgent({ node: i + 1, listen: { host: '127.0.0.1', port: ports[i] }, peers, namespace: ns }, silentLogger));
  }
  for (const a of agents) await a.waitForPeers();
  const nodes = [1, 2].map((n) => attach({ node: n, namespace: ns }));
  tt.teardown(() => nodes.forEach((n) => n.detach()));
  return { ns, agents, nodes, rq: new RuntimeRequests(agents) };
}

/** Stops the service, detaches, stops the agents: nothing may be left. */
async function finish(tt: Test, s: Setup, svc: Service): Promise<void> {
  svc.proc.child.kill('SIGTERM');
  tt.same(await svc.proc.child.exit(10000), { code: 0, signal: null }, 'the service stops cleanly (SIGTERM: exit 0)');
  s.nodes.forEach((n) => n.detach());
  for (const a of s.agents) await a.stop();
  await sleep(50);
  tt.same(shmFiles(s.ns), [], 'no segment left');
}

interface Service {
  node: number;
  proc: ServeProc;
  conn: ControlConnection;
}

/** `dvs serve MODULE ARGS` on `node`; resolves once it registered with its agent (and the other node knows the endpoint). */
async function serveOn(tt: Test, s: Setup, node: number, module: string, args: string[] = []): Promise<Service> {
  const proc = new ServeProc(tt, [module, ...args, '--dc', String(DC), '--ep', String(EP), '--node', String(node), '--namespace', s.ns]);
  const serving = await proc.until('serving');
  tt.match(serving, { node, restored: false, migratable: true }, `serving on node ${node}`);
  const reg = await s.rq.next('service', node, (r) => r.req.pid === proc.pid);
  tt.match(reg.req, { dc: DC, ep: EP, node, module, args, pid: proc.pid }, "registered: {op:'service', dc, ep, node, module, args, pid}");
  const other = s.agents[2 - node];
  await until('the other node to learn the endpoint', () => other.ps().some((e) => e.ep === EP && e.where === 'remote'));
  return { node, proc, conn: reg.conn };
}

/** START: the other node marks its proxy and fences, then the source marks; the runtime is told to quiesce. */
async function startAndQuiesce(s: Setup, src: Service, id: number, opts: { fence?: boolean; timeoutMs?: number } = {}): Promise<number[]> {
  const others = [1, 2].filter((n) => n !== src.node);
  for (const x of others) {
    const e = engineOf(s.agents[x - 1]);
    e.setMigrating(DC, EP, true);
    if (opts.fence !== false) e.fence(DC, EP, id);
  }
  engineOf(s.agents[src.node - 1]).setMigrating(DC, EP, true);
  s.rq.push(src.conn, { ev: 'mig-quiesce', mig: id, id, fences: others, timeoutMs: opts.timeoutMs ?? 10000 });
  return others;
}

function clearMarks(s: Setup): void {
  for (const a of s.agents) engineOf(a).setMigrating(DC, EP, false);
}

/**
 * Moves the service from src to the other node: quiesce, image, a
 * destination started with --restore FILE (or a standby told mig-restore),
 * restored; COMMIT at the destination (adopt, mig-adopt, mig-serving), then at
 * the source (toProxy, mig-detached: the old runtime exits 0).
 */
async function migrate(tt: Test, s: Setup, src: Service, module: string, mode: 'restore' | 'standby'): Promise<Service & { image: ServiceImage }> {
  const id = ++nextId;
  const dst = 3 - src.node;
  const eS = engineOf(s.agents[src.node - 1]);
  const eD = engineOf(s.agents[dst - 1]);
  const base = ['--dc', String(DC), '--ep', String(EP), '--node', String(dst), '--namespace', s.ns];
  let standby: ServeProc | null = null;
  let standbyConn: ControlConnection | null = null;
  if (mode === 'standby') {
    // PREPARE (outside the freeze): the module loaded and attached, not bound.
    standby = new ServeProc(tt, [module, ...base, '--standby']);
    const r = await s.rq.next('mig-standby', dst, (x) => x.req.pid === standby!.pid);
    tt.match(r.req, { dc: DC, ep: EP, pid: standby.pid }, "standby: {op:'mig-standby', dc, ep, pid}");
    standbyConn = r.conn;
  }
  await startAndQuiesce(s, src, id);
  const img = await s.rq.next('mig-image', src.node, (r) => r.req.mig === id);
  const quiesced = await src.proc.until('quiesced');
  const bytes = readFileSync(img.req.file as string);
  const image = decodeImage(bytes);
  tt.match(image, { id, dc: DC, ep: EP, node: src.node, module }, `migration ${id}: the image names the migration, endpoint, node and module`);
  tt.equal(img.req.bytes, bytes.length, 'mig-image: bytes');
  tt.equal(img.req.messages, image.messages.length, `mig-image: messages (${image.messages.length}), as in the image`);
  tt.same(
    img.req.calls,
    image.messages.filter((m) => m.kind === 'call').map((m) => [m.srcNode, m.src, m.srcGen, m.callId]),
    'mig-image: calls = the image\'s calls as [srcNode, src, srcGen, callId]',
  );
  tt.equal(quiesced.messages, image.messages.length, 'the quiesced event agrees');
  eS.expectReplies(dst, imageExpectedReplies(image, src.node));
  // TRANSFER: the destination gets its own copy.
  const file = join(tmpdir(), `dvs-serve-test-${process.pid}-${id}.img`);
  writeFileSync(file, bytes);
  tt.teardown(() => rmSync(file, { force: true }));
  let proc: ServeProc;
  if (standby) {
    s.rq.push(standbyConn!, { ev: 'mig-restore', mig: id, id, file });
    proc = standby;
  } else proc = new ServeProc(tt, [module, '--restore', file, ...base]);
  const restored = await s.rq.next('mig-restored', dst, (r) => r.req.pid === proc.pid);
  tt.match(restored.req, { mig: id, dc: DC, ep: EP, pid: proc.pid }, `${mode}: {op:'mig-restored', mig, dc, ep, pid}`);
  tt.match(await proc.until('restored'), { mig: id, messages: image.messages.length }, 'restored event');
  rmSync(file, { force: true });
  // COMMIT: the destination first.
  const gen = eD.endpoints().find((e) => e.dc === DC && e.ep === EP)!.gen;
  eD.adopt(DC, EP, proc.pid);
  s.rq.push(restored.conn, { ev: 'mig-adopt', mig: id, id });
  await s.rq.next('mig-serving', dst, (r) => r.req.mig === id && r.req.pid === proc.pid);
  tt.match(await proc.until('serving'), { node: dst, pid: proc.pid, restored: true }, 'the destination serves (restored)');
  eD.setMigrating(DC, EP, false);
  // Then the source: its endpoint becomes a proxy to the destination, in place.
  eS.toProxy(DC, EP, dst, gen);
  eS.setMigrating(DC, EP, false);
  s.rq.push(src.conn, { ev: 'mig-detached', mig: id, id });
  tt.match(await src.proc.until('detached'), { mig: id }, 'the source runtime: detached');
  tt.same(await src.proc.child.exit(10000), { code: 0, signal: null }, 'and exits 0');
  tt.same(imagesOf(src.proc.pid), [], 'its image file is removed');
  tt.ok(s.agents[src.node - 1].ps().some((e) => e.ep === EP && e.where === 'remote' && e.node === dst), `node ${src.node} keeps a proxy to node ${dst} (the exit did not unbind it)`);
  const reg = await s.rq.next('service', dst, (r) => r.req.pid === proc.pid);
  tt.match(reg.req, { dc: DC, ep: EP, node: dst, module }, "the restored runtime registers as the service ({op:'service'})");
  return { node: dst, proc, conn: reg.conn, image };
}

function kvClients(s: Setup): { node: number; c: KvClient }[] {
  return s.nodes.map((n, i) => ({ node: i + 1, c: new KvClient(n.bind(DC, 21 + i), EP, `client${i + 1}`) }));
}

t.test('quiesce, image, then rollback (mig-resume): the drained messages are handled first, nothing lost', async (tt) => {
  const s = await setup(tt, 'servemigrb');
  let svc = await serveOn(tt, s, 1, KV);
  const clients = kvClients(s);
  for (const { c } of clients) await c.rounds(20);
  const id = ++nextId;
  await startAndQuiesce(s, svc, id);
  const img = await s.rq.next('mig-image', 1, (r) => r.req.mig === id);
  const file = img.req.file as string;
  tt.ok(existsSync(file), 'the image file exists while quiesced');
  const image = decodeImage(readFileSync(file));
  tt.ok(image.state && image.state.length > 0, 'it carries the kv state');
  // Each client has one operation in flight at a time: the one under way at
  // START may still complete (its acknowledgement or reply was on its way), no more.
  const before = clients.map(({ c }) => c.sent + c.calls);
  await sleep(300);
  const moved = clients.map(({ c }, i) => c.sent + c.calls - before[i]);
  tt.ok(moved.every((d) => d <= 1), `while quiesced the clients are held (operations completed meanwhile: ${moved.join(', ')})`);
  // ROLLBACK: marks cleared, the runtime resumes.
  clearMarks(s);
  s.rq.push(svc.conn, { ev: 'mig-resume', mig: id, id });
  tt.match(await svc.proc.until('resumed'), { mig: id, messages: image.messages.length }, `resumed: ${image.messages.length} kept message(s) handled first`);
  tt.notOk(existsSync(file), 'the image file is removed at the rollback');
  s.rq.push(svc.conn, { ev: 'mig-resume', mig: id, id });  // a repeat is a no-op
  for (const { c } of clients) await c.rounds(20);
  // The same service migrates fine afterwards (the rollback left no trace).
  svc = await migrate(tt, s, svc, KV, 'restore');
  for (const { c } of clients) await c.rounds(20);
  for (const { c } of clients) await c.stop();
  await checkKv(tt, s.nodes[0].bind(DC, 29), EP, clients);
  await finish(tt, s, svc);
});

t.test('the image carries the unread mailbox in order: handled at the source after a rollback, at the destination after a commit', async (tt) => {
  const s = await setup(tt, 'servemigmb');
  const module = fixturePath('svc-hooks');
  let svc: Service = await serveOn(tt, s, 1, module);
  const busy = s.nodes[0].bind(DC, 20);
  const callers = s.nodes.map((n, i) => n.bind(DC, 21 + i));
  // Behind a slow call: from each node 10 one-way messages and a call; a notification from node 2.
  const fill = async (from: number, ms: number): Promise<Promise<unknown>[]> => {
    const slow = callJson(busy, EP, { op: 'sleep', ms });
    await svc.proc.fixture('sleeping');
    for (const c of callers) for (let k = from; k < from + 10; k++) await c.send(EP, JSON.stringify({ seq: k }));
    callers[1].notify(EP, 4);
    return [slow, ...callers.map((c) => callJson<{ n: number }>(c, EP, { op: 'inc' }))];
  };
  const expectImage = (image: ServiceImage, from: number, what: string): void => {
    for (const [node, src] of [[1, 21], [2, 22]]) {
      const mine = image.messages.filter((m) => m.src === src && m.srcNode === node && m.kind !== 'notify');
      tt.same(
        mine.map((m) => (m.kind === 'send' ? JSON.parse(Buffer.from(m.payload).toString()).seq : `${m.kind} ${Buffer.from(m.payload).toString()}`)),
        [...Array.from({ length: 10 }, (_, k) => from + k), 'call {"op":"inc"}'],
        `${what}: ${node}:${src}'s unread messages, in order, then its call`,
      );
    }
    // (A notification from another node is reported with the receiving node as srcNode: notification bits keep only the source endpoint.)
    tt.same(image.messages.filter((m) => m.kind === 'notify').map((m) => [m.src, m.bits]), [[22, 4]], `${what}: the notification`);
  };

  // Rollback: the kept messages are handled at the source, first.
  let pending = await fill(0, 500);
  const id = ++nextId;
  await startAndQuiesce(s, svc, id);
  const img = await s.rq.next('mig-image', 1, (r) => r.req.mig === id);
  const image = decodeImage(readFileSync(img.req.file as string));
  expectImage(image, 0, 'quiesced');
  clearMarks(s);
  s.rq.push(svc.conn, { ev: 'mig-resume', mig: id, id });
  const [, ...ns] = (await within(Promise.all(pending), 20000, 'the calls after the rollback')) as { n: number }[];
  tt.same(ns.map((r) => r.n).sort(), [1, 2], 'the calls in the image are answered at the source');
  tt.same(await callJson(busy, EP, { op: 'seqs' }), { '1:21': Array.from({ length: 10 }, (_, k) => k), '2:22': Array.from({ length: 10 }, (_, k) => k) }, 'the one-way messages of the image handled once, in order');

  // Commit (standby destination): the same mailbox content is handled at the destination.
  pending = await fill(10, 1500);
  const moved = await migrate(tt, s, svc, module, 'standby');
  expectImage(moved.image, 10, 'migrated');
  svc = moved;
  const [, ...ns2] = (await within(Promise.all(pending), 20000, 'the calls after the commit')) as { n: number }[];
  tt.same(ns2.map((r) => r.n).sort(), [3, 4], 'the calls in the image are answered by the destination (node 1\'s through expectReplies)');
  tt.same(
    await callJson(callers[0], EP, { op: 'seqs' }),
    { '1:21': Array.from({ length: 20 }, (_, k) => k), '2:22': Array.from({ length: 20 }, (_, k) => k) },
    'every one-way message handled once, in order, across the rollback and the migration',
  );
  tt.match(await callJson(callers[1], EP, { op: 'get' }), { n: 4, restored: 1, notes: 2, pid: moved.proc.pid }, 'the state moved with it (restored once), both notifications counted');
  await finish(tt, s, svc);
});

t.test('what arrived after the last fence (senders on the source node, not marked yet) goes into the image too', async (tt) => {
  const s = await setup(tt, 'servemigsw');
  const module = fixturePath('svc-hooks');
  const svc = await serveOn(tt, s, 1, module);
  const busy = s.nodes[0].bind(DC, 20);
  const local = s.nodes[0].bind(DC, 21);
  const slow = callJson(busy, EP, { op: 'sleep', ms: 300 });
  await svc.proc.fixture('sleeping');
  const queued = (): number => s.nodes[0].stats().endpoints.find((e) => e.dc === DC && e.ep === EP)?.queued ?? -1;
  const q0 = queued();
  const id = ++nextId;
  engineOf(s.agents[1]).setMigrating(DC, EP, true);
  engineOf(s.agents[1]).fence(DC, EP, id);
  await until("node 2's fence in the mailbox", () => queued() === q0 + 1);
  for (let k = 0; k < 5; k++) await local.send(EP, JSON.stringify({ seq: k }));  // behind the fence
  engineOf(s.agents[0]).setMigrating(DC, EP, true);
  s.rq.push(svc.conn, { ev: 'mig-quiesce', mig: id, id, fences: [2], timeoutMs: 10000 });
  const img = await s.rq.next('mig-image', 1, (r) => r.req.mig === id);
  const image = decodeImage(readFileSync(img.req.file as string));
  tt.same(
    image.messages.map((m) => [m.kind, m.srcNode, m.src, JSON.parse(Buffer.from(m.payload).toString()).seq]),
    Array.from({ length: 5 }, (_, k) => ['send', 1, 21, k]),
    'the five messages behind the fence are in the image, in order',
  );
  clearMarks(s);
  s.rq.push(svc.conn, { ev: 'mig-resume', mig: id, id });
  await slow;
  tt.same(await callJson(busy, EP, { op: 'seqs' }), { '1:21': [0, 1, 2, 3, 4] }, 'and handled once each after the rollback');
  await finish(tt, s, svc);
});

t.test('quiesce failures resume by themselves: a missing fence, a busy handler, snapshot() throwing, a second migration', async (tt) => {
  const s = await setup(tt, 'servemigfail');
  const svc = await serveOn(tt, s, 1, fixturePath('svc-hooks'), ['snapshot-throws']);
  const c = s.nodes[1].bind(DC, 22);
  const local = s.nodes[0].bind(DC, 21);
  tt.same(await callJson(c, EP, { op: 'inc' }), { n: 1 }, 'serving');

  // 1. A fence that never comes (node 2 is not even marked): EDVSTIMEDOUT naming node 2.
  let id = ++nextId;
  s.rq.push(svc.conn, { ev: 'mig-quiesce', mig: id, id, fences: [2], timeoutMs: 300 });
  let f = await s.rq.next('mig-failed', 1, (r) => r.req.mig === id);
  tt.match(f.req.error, { code: 'EDVSTIMEDOUT', message: /no fence from node\(s\) 2 within 300 ms/ }, 'missing fence: mig-failed EDVSTIMEDOUT naming the node');
  tt.match(await svc.proc.until('failed'), { mig: id, code: 'EDVSTIMEDOUT' }, 'failed event');
  tt.same(await callJson(c, EP, { op: 'inc' }), { n: 2 }, 'and it serves on');

  // 2. A handler still busy when the time is up: the call completes, then the service serves on.
  const slow = callJson(local, EP, { op: 'sleep', ms: 1500 });
  await svc.proc.fixture('sleeping');
  id = ++nextId;
  s.rq.push(svc.conn, { ev: 'mig-quiesce', mig: id, id, fences: [], timeoutMs: 200 });
  f = await s.rq.next('mig-failed', 1, (r) => r.req.mig === id);
  tt.match(f.req.error, { code: 'EDVSTIMEDOUT', message: /did not reach a message boundary/ }, 'busy: mig-failed EDVSTIMEDOUT (no message boundary in time)');
  tt.same(await slow, { slept: 1500 }, 'the slow call is answered');
  tt.same(await callJson(c, EP, { op: 'inc' }), { n: 3 }, 'and it serves on');

  // 3. snapshot() throws: its error code, and serving on with the drained messages first.
  id = ++nextId;
  await startAndQuiesce(s, svc, id);
  const sends = [0, 1, 2].map((k) => c.send(EP, JSON.stringify({ seq: k }), { timeoutMs: 20000 }));  // held by the mark, then delivered
  f = await s.rq.next('mig-failed', 1, (r) => r.req.mig === id);
  tt.match(f.req.error, { code: 'EFIXTURE', message: 'snapshot failed on purpose' }, 'snapshot() threw: mig-failed with its code');
  clearMarks(s);
  s.rq.push(svc.conn, { ev: 'mig-resume', mig: id, id });  // the orchestrator's rollback: a no-op by now
  await within(Promise.all(sends), 20000, 'the held sends');
  tt.same(await callJson(c, EP, { op: 'seqs' }), { '2:22': [0, 1, 2] }, 'messages held during the failed quiesce arrive, in order');

  // 4. A second migration while one is in progress: EDVSBUSY for it; the first goes on (here: rolled back).
  id = ++nextId;
  s.rq.push(svc.conn, { ev: 'mig-quiesce', mig: id, id, fences: [2], timeoutMs: 10000 });
  s.rq.push(svc.conn, { ev: 'mig-quiesce', mig: id + 1, id: id + 1, fences: [], timeoutMs: 10000 });
  f = await s.rq.next('mig-failed', 1, (r) => r.req.mig === id + 1);
  tt.match(f.req.error, { code: 'EDVSBUSY', message: new RegExp(`migration ${id} of this service is in progress`) }, 'second quiesce: EDVSBUSY');
  s.rq.push(svc.conn, { ev: 'mig-resume', mig: id, id });
  tt.match(await svc.proc.until('resumed'), { mig: id }, 'the first one rolled back');
  nextId++;
  tt.same(await callJson(c, EP, { op: 'inc' }), { n: 4 }, 'serving, state as it was');
  tt.same(s.rq.pending('mig-image'), [], 'no image was ever sent');
  tt.same(imagesOf(svc.proc.pid), [], 'no image file left');
  await finish(tt, s, svc);
});

t.test('commit: the service moves 1 → 2 → 1 → 2 → 1 (--restore and --standby destinations) under load', async (tt) => {
  const s = await setup(tt, 'servemig');
  let svc = await serveOn(tt, s, 1, KV);
  const probe = s.nodes[0].bind(DC, 29);
  tt.same(await callJson(probe, EP, { op: 'put', key: 'fixed', value: 'kept' }), { ok: true, size: 1 }, 'a key before the migrations');
  const clients = kvClients(s);
  for (const { c } of clients) await c.rounds(10);
  const modes = ['restore', 'standby', 'standby', 'restore'] as const;
  for (const mode of modes) {
    const from = svc.node;
    svc = await migrate(tt, s, svc, KV, mode);
    for (const { c } of clients) await c.rounds(10);
    tt.same(await callJson(probe, EP, { op: 'get', key: 'fixed' }), { found: true, value: 'kept' }, `after ${from} → ${svc.node} (${mode}): the state is intact`);
  }
  for (const { c } of clients) await c.stop();
  await checkKv(tt, probe, EP, clients);
  await finish(tt, s, svc);
});

t.test('restore() throws at the destination: mig-failed, exit 1; the source resumes and nothing is lost', async (tt) => {
  const s = await setup(tt, 'servemigrt');
  const module = fixturePath('svc-hooks');
  const svc = await serveOn(tt, s, 1, module, ['restore-throws']);
  const c = s.nodes[1].bind(DC, 22);
  let sent = 0;
  let running = true;
  const errors: string[] = [];
  const loop = (async () => {
    while (running) {
      try {
        await c.send(EP, JSON.stringify({ seq: sent }), { timeoutMs: 30000 });
        sent++;
        await callJson(c, EP, { op: 'inc' }, 30000);
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
  })();
  await until('some traffic', () => sent >= 20);
  const id = ++nextId;
  await startAndQuiesce(s, svc, id);
  const img = await s.rq.next('mig-image', 1, (r) => r.req.mig === id);
  const file = join(tmpdir(), `dvs-serve-test-${process.pid}-${id}.img`);
  writeFileSync(file, readFileSync(img.req.file as string));
  tt.teardown(() => rmSync(file, { force: true }));
  const dest = new ServeProc(tt, [module, '--restore', file, '--dc', String(DC), '--ep', String(EP), '--node', '2', '--namespace', s.ns]);
  const f = await s.rq.next('mig-failed', 2, (r) => r.req.mig === id);
  tt.match(f.req.error, { code: 'EDVSINVAL', message: 'restore() threw: restore failed on purpose' }, "the destination: {op:'mig-failed'} with the reason");
  tt.equal((await dest.child.exit(10000)).code, 1, 'and exits 1');
  tt.match(dest.child.stderr, /dvs: EDVSINVAL: restore\(\) threw/, 'saying why on stderr');
  // ROLLBACK.
  clearMarks(s);
  s.rq.push(svc.conn, { ev: 'mig-resume', mig: id, id });
  await svc.proc.until('resumed');
  const mark = sent;
  await until('traffic after the rollback', () => sent >= mark + 20);
  running = false;
  await within(loop, 40000, 'the client');
  const r = await callJson<{ n: number }>(c, EP, { op: 'get' });
  tt.equal(r.n, sent, `every call handled once (${sent})`);
  tt.same(await callJson(c, EP, { op: 'seqs' }), { '2:22': Array.from({ length: sent }, (_, k) => k) }, 'every one-way message handled once, in order');
  tt.same(errors, [], 'the client saw no error');
  await finish(tt, s, svc);
});

t.test('destination processes exit on mig-abort and when their agent goes; a quiesced source exits when its agent goes, a serving one serves on', async (tt) => {
  const s = await setup(tt, 'servemigab');
  const src = await serveOn(tt, s, 1, KV);
  const base = ['--dc', String(DC), '--ep', String(EP), '--node', '2', '--namespace', s.ns];
  // A standby told that its migration was rolled back: exit 1 at once.
  const sb1 = new ServeProc(tt, [KV, ...base, '--standby']);
  const r1 = await s.rq.next('mig-standby', 2, (r) => r.req.pid === sb1.pid);
  s.rq.push(r1.conn, { ev: 'mig-abort', mig: 77, id: 77 });
  tt.equal((await sb1.child.exit(10000)).code, 1, 'standby + mig-abort: exit 1');
  tt.match(sb1.child.stderr, /mig-abort/, 'saying why');
  // A second service on node 2 (another endpoint), serving: it outlives its agent.
  const other = new ServeProc(tt, [KV, '--dc', String(DC), '--ep', '11', '--node', '2', '--namespace', s.ns]);
  await other.until('serving');
  await s.rq.next('service', 2, (r) => r.req.pid === other.pid);
  const sb2 = new ServeProc(tt, [KV, ...base, '--standby']);
  await s.rq.next('mig-standby', 2, (r) => r.req.pid === sb2.pid);
  // The source quiesced (image sent), then its agent goes: it must not serve on (the migration may have committed).
  const id = ++nextId;
  s.rq.push(src.conn, { ev: 'mig-quiesce', mig: id, id, fences: [], timeoutMs: 10000 });
  await s.rq.next('mig-image', 1, (r) => r.req.mig === id);
  const client = s.nodes[1].bind(DC, 22);
  tt.same(await callJson(client, 11, { op: 'put', key: 'k', value: 1 }), { ok: true, size: 1 }, 'the other service answers');
  s.nodes[0].detach();
  await s.agents[0].stop();
  tt.equal((await src.proc.child.exit(10000)).code, 1, 'quiesced source whose agent stopped: exit 1');
  tt.match(src.proc.child.stderr, /EDVSNOTCONN: the agent connection closed while quiesced/, 'saying why');
  tt.same(imagesOf(src.proc.pid), [], 'its image file removed');
  await s.agents[1].stop();
  tt.equal((await sb2.child.exit(10000)).code, 1, 'standby whose agent stopped: exit 1');
  tt.same(await callJson(client, 11, { op: 'get', key: 'k' }), { found: true, value: 1 }, 'the serving one serves on without its agent (local IPC)');
  tt.match(other.child.stderr, /the agent connection closed .* serving on, without migration support/, 'with a warning');
  other.child.kill('SIGTERM');
  tt.equal((await other.child.exit(10000)).code, 0, 'and stops cleanly');
  s.nodes[1].detach();
  await sleep(50);
  tt.same(shmFiles(s.ns), [], 'no segment left');
});

t.test('a service without snapshot()/restore() migrates stateless; the calls in its image are answered by the destination', async (tt) => {
  const s = await setup(tt, 'servemigsl');
  const module = fixturePath('svc-stateless');
  const svc = await serveOn(tt, s, 1, module);
  const callers: Endpoint[] = s.nodes.map((n, i) => n.bind(DC, 21 + i));
  const answered: { seq: number; pid: number }[][] = [[], []];
  const errors: string[] = [];
  let running = true;
  const loops = callers.map(async (ep, i) => {
    for (let seq = 0; running; seq++) {
      try {
        const r = await callJson<{ seq: number; pid: number }>(ep, EP, { seq }, 30000);
        if (r.seq !== seq) errors.push(`caller ${i}: asked ${seq}, answered ${r.seq}`);
        answered[i].push(r);
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
  });
  await until('some calls', () => answered.every((a) => a.length >= 10));
  const moved = await migrate(tt, s, svc, module, 'standby');
  await until('calls at the destination', () => answered.every((a) => a.filter((r) => r.pid === moved.proc.pid).length >= 10));
  running = false;
  await within(Promise.all(loops), 40000, 'the callers');
  tt.same(errors, [], 'no caller saw an error or a wrong answer');
  tt.ok(answered.every((a) => a.some((r) => r.pid === svc.proc.pid) && a.some((r) => r.pid === moved.proc.pid)), 'answered first by the source, then by the destination');
  await finish(tt, s, moved);
});
