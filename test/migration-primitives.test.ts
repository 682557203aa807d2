// migration-primitives.test.ts — the native migration protocol driven by
// hand (docs/DESIGN.md "Migration"), with three embedded agents in this
// process: a server endpoint moves from node 2 (source) to node 3
// (destination) while clients on all three nodes send sequenced one-way
// messages and make calls. START: marks on node 1's and node 3's proxies,
// fences from nodes 1 and 3, then the mark on the source slot; the "runtime"
// drains the source mailbox until both fences, keeping what it drained (the
// image); COMMIT: node 3's proxy is adopted in place by the new server, which
// answers the image's calls by their reply targets and takes the image's
// one-way messages first; node 1's proxy is repointed; the source slot becomes
// a proxy to node 3 in place (the old handle is detached); the marks clear.
// Checked: every client's messages arrive exactly once and in order, every
// call is answered, no client sees an error.
import t from 'tap';
import { attach, startAgent, type Agent, type Endpoint, type Message } from '../lib/index.js';
import { silentLogger } from '../lib/agent/log.js';
import { codeOf, shmFiles, sleep, uniqueNs, within } from './helpers.js';
import { engineOf, freeUdpPorts, until } from './cluster-helpers.js';

const DC = 1;
const SERVER = 50;
const TOKEN = 7;



t.test('a server endpoint moves from node 2 to node 3 under load: nothing lost, duplicated or reordered', async (tt) => {
  const ns = uniqueNs('migprim');
  const ports = await freeUdpPorts(3);
  const agents: Agent[] = [];
  tt.teardown(async () => {
    for (const a of agents) await a.stop();
  });
  for (let i = 0; i < 3; i++) {
    const peers = ports.map((port, j) => ({ node: j + 1, host: '127.0.0.1', port })).filter((p) => p.node !== i + 1);
    agents.push(await startAgent({ node: i + 1, listen: { host: '127.0.0.1', port: ports[i] }, peers, namespace: ns }, silentLogger));
  }
  for (const a of agents) await a.waitForPeers();
  const [a1, a2, a3] = agents;
  const [e1, e2, e3] = agents.map(engineOf);
  const nodes = [1, 2, 3].map((n) => attach({ node: n, namespace: ns }));
  tt.teardown(() => nodes.forEach((n) => n.detach()));

  // The server on node 2: one-way messages are recorded per sender; calls answered with payload + 1.
  const got = new Map<number, number[]>();
  const record = (m: Message): void => {
    const [sender, seq] = m.text().split(':').map(Number);
    if (!got.has(sender)) got.set(sender, []);
    got.get(sender)!.push(seq);
  };
  const answer = (m: Message): Uint8Array => Uint8Array.from(m.payload, (b) => (b + 1) & 0xff);
  const old = nodes[1].bind(DC, SERVER, { name: 'kv' });
  const fenced = new Map<number, number>();  // node -> token
  let serving = true;
  const oldLoop = (async () => {
    while (serving) {
      let m: Message;
      try {
        m = await old.receive({ timeoutMs: 50 });
      } catch {
        continue;  // timeout: look at `serving` again
      }
      if (m.kind === 'fence') {
        // A fence can arrive before the source is told to quiesce (client nodes fence first): keep it.
        fenced.set(m.srcNode, m.bits);
        m.release();
        continue;
      }
      if (m.kind === 'call') m.reply(answer(m));
      else if (m.kind === 'send') record(m);
      m.release();
    }
  })();
  await until('nodes 1 and 3 to learn the server', () => [a1, a3].every((a) => a.ps().some((e) => e.ep === SERVER && e.where === 'remote')));

  // Clients: one per node, each sending sequenced one-way messages and calls until told to stop.
  const clients = nodes.map((n, i) => n.bind(DC, 60 + i));
  const errors: string[] = [];
  let running = true;
  tt.teardown(() => {
    running = false;
    serving = false;
  });
  const sent = [0, 0, 0];
  const calls = [0, 0, 0];
  const loops = clients.map(async (c: Endpoint, i) => {
    while (running) {
      try {
        await c.send(SERVER, `${60 + i}:${sent[i]}`, { timeoutMs: 20000 });
        sent[i]++;
        const r = await c.call(SERVER, Uint8Array.from([sent[i] & 0xff]), { timeoutMs: 20000 });
        if (r.payload[0] !== ((sent[i] + 1) & 0xff)) errors.push(`client ${i}: wrong reply`);
        r.release();
        calls[i]++;
      } catch (e) {
        errors.push(`client ${i}: ${(e as { code?: string }).code ?? String(e)}`);
        await sleep(10);
      }
    }
  });
  await until('some traffic', () => sent.every((s) => s >= 20));

  // ---- START: client nodes first (marks, then fences), the source last.
  e1.setMigrating(DC, SERVER, true);
  e3.setMigrating(DC, SERVER, true);
  e1.fence(DC, SERVER, TOKEN);
  e3.fence(DC, SERVER, TOKEN);
  e2.setMigrating(DC, SERVER, true);
  serving = false;
  await oldLoop;  // the old server has finished the message it was handling

  // Drain the source mailbox until both fences: that is the image (kept, not handled).
  const image: Message[] = [];
  while (fenced.size < 2) {
    const m = await within(old.receive({ timeoutMs: 10000 }), 15000, 'the drain');
    if (m.kind === 'fence') {
      fenced.set(m.srcNode, m.bits);
      m.release();
    } else {
      image.push(m);
    }
  }
  tt.same([...fenced.entries()].sort(), [[1, TOKEN], [3, TOKEN]], 'fences from both client nodes arrived in the source mailbox, with the token');
  // Sends accepted before the marks complete when their acknowledgements arrive; then nothing moves.
  await sleep(300);
  const before = sent.slice();
  await sleep(300);
  tt.same(sent, before, 'while marked, the clients are held (no send completes)');

  // ---- COMMIT at the destination: adopt the proxy in place, answer the image first.
  const gen3 = e3.endpoints().find((e) => e.ep === SERVER)!.gen;
  // Calls in the image from node 2's own clients will be answered from node 3.
  const local = image.filter((m) => m.kind === 'call' && m.srcNode === 2).map((m) => [DC, m.src, m.replyTarget!.gen, m.replyTarget!.callId, SERVER]);
  // (A rollback withdraws what expectReplies set up: an unrelated expectation, set and withdrawn.)
  const pendingNow = (): number => Number((a2.stats() as { pending?: number }).pending ?? 0);
  const base = pendingNow();
  e2.expectReplies(3, Uint32Array.from([DC, 61, 1, 999999, SERVER]));
  await until('the expectation to show', () => pendingNow() === base + 1, 5000);
  e2.forgetReplies(3, Uint32Array.from([DC, 61, 1, 999999, SERVER]));
  await until('the expectation to go', () => pendingNow() === base, 5000);
  tt.pass('forgetReplies withdraws an expectation');
  e2.expectReplies(3, Uint32Array.from(local.flat()));
  tt.equal(await codeOf(() => nodes[2].adopt(DC, SERVER)), 'EDVSNOTBIND', 'adopt before the agent handed the endpoint over: EDVSNOTBIND');
  e3.adopt(DC, SERVER, process.pid, 'kv');
  const moved = nodes[2].adopt(DC, SERVER);
  const row = e3.endpoints().find((e) => e.ep === SERVER)!;
  tt.same([row.gen, row.remote, row.name], [gen3, false, 'kv'], 'same slot incarnation after the adoption, now local, with the name it had at the source');
  for (const m of image) {
    if (m.kind === 'call') moved.replyTo(m.replyTarget!, answer(m));
    else if (m.kind === 'send') record(m);
    m.release();
  }
  let serving2 = true;
  const newLoop = (async () => {
    while (serving2) {
      let m: Message;
      try {
        m = await moved.receive({ timeoutMs: 50 });
      } catch {
        continue;
      }
      if (m.kind === 'call') m.reply(answer(m));
      else if (m.kind === 'send') record(m);
      m.release();
    }
  })();
  e3.setMigrating(DC, SERVER, false);
  // ---- the other client node: repoint (the directory will say the same), release.
  tt.equal(await codeOf(() => e1.repoint(DC, 999, 3, gen3)), 'EDVSNOTBIND', 'repoint of an endpoint node 1 has no proxy for: EDVSNOTBIND');
  tt.equal(await codeOf(() => e1.repoint(DC, SERVER, 1, gen3)), 'EDVSBADNODEID', 'repoint to itself: EDVSBADNODEID');
  e1.repoint(DC, SERVER, 3, gen3);
  tt.ok(a1.ps().some((e) => e.ep === SERVER && e.node === 3), 'node 1 points at node 3 as soon as repoint returns');
  e1.setMigrating(DC, SERVER, false);
  // ---- last the source: the slot becomes a proxy to node 3, in place.
  e2.toProxy(DC, SERVER, 3, gen3);
  tt.equal(await codeOf(old.receive({ timeoutMs: 0 })), 'EDVSNOTBIND', "the old server's handle is detached");
  tt.same(e2.endpoints().filter((e) => e.ep === SERVER).map((e) => [e.remote, e.node, e.name]), [[true, 3, '']], 'the source lists it as a proxy to node 3 (the name is published by node 3 now)');
  e2.setMigrating(DC, SERVER, false);

  // Let the clients run against the new location, then stop and check.
  const mark = sent.slice();
  await until('traffic after the migration', () => sent.every((s, i) => s >= mark[i] + 20), 20000);
  running = false;
  await within(Promise.all(loops), 30000, 'the clients to stop');
  serving2 = false;
  await newLoop;
  tt.same(errors, [], 'no client saw an error');
  for (let i = 0; i < 3; i++) {
    const seqs = got.get(60 + i) ?? [];
    tt.same(seqs, Array.from({ length: sent[i] }, (_, k) => k), `client on node ${i + 1}: ${sent[i]} messages, each exactly once, in order`);
  }
  tt.ok(calls.every((c, i) => c === sent[i]), `every call answered (${calls.join(', ')})`);
  old.close();  // detached: must not unbind the proxy
  tt.ok(a2.ps().some((e) => e.ep === SERVER && e.where === 'remote' && e.node === 3), 'closing the old handle left the proxy in place');

  for (const c of [...clients, moved]) c.close();
  nodes.forEach((n) => n.detach());
  for (const a of agents.splice(0)) await a.stop();
  await sleep(50);
  tt.same(shmFiles(ns), [], 'no segment left');
});
