// serve-runtime.test.ts — `dvs serve` on its own, as real processes: two
// `dvs agent` children, the service on node 2, clients on both nodes.
// examples/kv.js answers put/get/del/size; errors become the documented error
// payload; one-way messages are handled in order per sender; replies of every
// form (JSON, bytes, text, empty, too big, not JSON); one message at a time;
// SIGTERM stops it (exit 0, endpoint unbound); bad modules and arguments exit
// 1 with a DvsError; without an agent it serves locally, not migratable.
import { resolve } from 'node:path';
import t from 'tap';
import { attach, type Endpoint } from '../lib/index.js';
import { runCli, startCluster, waitRemote } from './cluster-helpers.js';
import { codeOf, fixturePath, ROOT, shmFiles, sleep, uniqueNs, within } from './helpers.js';
import { callJson, ServeProc } from './serve-helpers.js';

const KV = resolve(ROOT, 'examples', 'kv.js');
const DC = 1;
const EP = 10;

t.test('examples/kv.js under dvs serve, called from two nodes', async (tt) => {
  const ns = uniqueNs('serve');
  const agents = await startCluster(tt, ns, [1, 2]);
  const svc = new ServeProc(tt, [KV, '--dc', String(DC), '--ep', String(EP), '--node', '2', '--namespace', ns, '--name', 'kv']);
  const serving = await svc.event();
  tt.match(serving, { event: 'serving', dc: DC, ep: EP, node: 2, pid: svc.pid, module: KV, restored: false, migratable: true }, 'serving event: endpoint, node, pid, absolute module path');
  const ps = await agents[1].request<{ endpoints: { ep: number; where: string; pid: number; name: string }[] }>('ps');
  tt.match(ps.endpoints.find((e) => e.ep === EP), { where: 'local', pid: svc.pid, name: 'kv' }, 'bound on node 2 by the serve process, with its name');
  await waitRemote(agents[0], DC, EP);

  const n1 = attach({ node: 1, namespace: ns });
  const n2 = attach({ node: 2, namespace: ns });
  tt.teardown(() => {
    n1.detach();
    n2.detach();
  });
  const c1 = n1.bind(DC, 21);
  const c2 = n2.bind(DC, 22);
  tt.same(await callJson(c1, EP, { op: 'put', key: 'a', value: { x: [1, 2] } }), { ok: true, size: 1 }, 'put from node 1');
  tt.same(await callJson(c2, EP, { op: 'get', key: 'a' }), { found: true, value: { x: [1, 2] } }, 'get from node 2 sees it');
  tt.same(await callJson(c2, EP, { op: 'put', key: 'b', value: 'β' }), { ok: true, size: 2 }, 'a second key');
  tt.same(await callJson(c1, EP, { op: 'size' }), { size: 2 }, 'size');
  tt.same(await callJson(c1, EP, { op: 'del', key: 'a' }), { deleted: true }, 'del');
  tt.same(await callJson(c1, EP, { op: 'del', key: 'a' }), { deleted: false }, 'del of a missing key');
  tt.same(await callJson(c1, EP, { op: 'get', key: 'a' }), { found: false, value: null }, 'get of a missing key');
  tt.same(await callJson(c1, EP, { op: 'frobnicate' }), { error: { code: 'EKVOP', message: 'unknown op "frobnicate"' } }, 'an unknown op: the error payload with the thrown error\'s code');
  const raw = await c1.call(EP, 'not json', { timeoutMs: 10000 });
  tt.match(JSON.parse(raw.text()), { error: { code: 'EKVJSON' } }, 'a call that is not JSON: error payload');
  raw.release();

  // One-way messages from both nodes, interleaved, then a call: all handled, in order per sender.
  const sends: Promise<void>[] = [];
  for (let i = 0; i < 200; i++) {
    sends.push(c1.send(EP, JSON.stringify({ op: 'put', key: 'one', value: i, seq: i })));
    sends.push(c2.send(EP, JSON.stringify({ seq: i })));
  }
  await within(Promise.all(sends), 20000, 'the one-way messages');
  c2.notify(EP, 1);
  const st = await callJson<{ size: number; notifications: number; senders: Record<string, { sends: { count: number; last: number; dup: number; gap: number } }> }>(c1, EP, { op: 'stats' });
  tt.same(st.senders['1:21'].sends, { count: 200, last: 199, dup: 0, gap: 0 }, 'node 1: 200 one-way messages, in order');
  tt.same(st.senders['2:22'].sends, { count: 200, last: 199, dup: 0, gap: 0 }, 'node 2: 200 one-way messages, in order');
  tt.equal(st.notifications, 1, 'the notification reached handle() as kind notify');
  tt.same(await callJson(c2, EP, { op: 'get', key: 'one' }), { found: true, value: 199 }, 'the last one-way put is the value');

  // SIGTERM: exit 0 after a 'stopped' event; the endpoint is gone.
  svc.child.kill('SIGTERM');
  tt.match(await svc.event(), { event: 'stopped' }, "SIGTERM: 'stopped'");
  tt.same(await svc.child.exit(10000), { code: 0, signal: null }, 'exit status 0');
  tt.match(await codeOf(c2.call(EP, '{"op":"size"}', { timeoutMs: 5000 })), /EDVSNOTBIND|EDVSDSTDIED/, 'the endpoint is unbound');
  c1.close();
  c2.close();
});

t.test('reply forms, errors, and one message at a time (svc-hooks fixture)', async (tt) => {
  const ns = uniqueNs('servehooks');
  await startCluster(tt, ns, [1]);
  const svc = new ServeProc(tt, [fixturePath('svc-hooks'), 'mode-a', 'mode-b', '--dc', String(DC), '--ep', String(EP), '--node', '1', '--namespace', ns]);
  await svc.until('serving');
  const n = attach({ node: 1, namespace: ns });
  tt.teardown(() => n.detach());
  const a = n.bind(DC, 31);
  const b = n.bind(DC, 32);
  const reply = async (ep: Endpoint, op: string): Promise<Uint8Array> => {
    const m = await ep.call(EP, JSON.stringify({ op }), { timeoutMs: 10000 });
    const u8 = m.payload.slice();
    m.release();
    return u8;
  };
  const text = async (op: string): Promise<string> => Buffer.from(await reply(a, op)).toString();
  tt.same([...(await reply(a, 'bytes'))], [1, 2, 3], 'a Uint8Array result is the reply as it is');
  tt.equal(await text('text'), 'plain', 'a string result is the reply as it is');
  tt.equal(await text('none'), '', 'undefined: an empty reply');
  tt.same(JSON.parse(await text('inc')), { n: 1 }, 'an object: JSON');
  tt.same(JSON.parse(await text('throw')), { error: { code: 'EFIXTURE', message: 'thrown on purpose' } }, 'a throw: {"error":{"code","message"}} with the error\'s code');
  tt.match(JSON.parse(await text('big')), { error: { code: 'EDVS2BIG' } }, 'a reply over 1 MiB: the error payload with EDVS2BIG');
  tt.match(JSON.parse(await text('bigint')), { error: { code: 'ERROR', message: /BigInt/ } }, 'a result JSON cannot hold: the error payload, code ERROR');
  tt.match(JSON.parse(await text('nope')), { error: { code: 'ERROR', message: 'unknown op nope' } }, 'an Error without a code: code ERROR');
  // A one-way message's result is ignored (no reply goes anywhere); it is recorded.
  await a.send(EP, JSON.stringify({ seq: 5 }));
  tt.same(JSON.parse(await text('seqs')), { '1:31': [5] }, 'one-way messages are handled too');

  // One message at a time: a call that arrives while an async handle() is
  // running is handled after it, whoever sends it.
  const order: string[] = [];
  const slow = a.call(EP, JSON.stringify({ op: 'sleep', ms: 300 }), { timeoutMs: 10000 }).then((m) => {
    order.push('sleep');
    m.release();
  });
  tt.same(JSON.parse((await svc.child.line()) as string), { fixture: 'sleeping' }, 'the slow call is being handled');
  const fast = b.call(EP, JSON.stringify({ op: 'get' }), { timeoutMs: 10000 }).then((m) => {
    order.push('get');
    m.release();
  });
  await within(Promise.all([slow, fast]), 10000, 'both calls');
  tt.same(order, ['sleep', 'get'], 'the second call was answered after the first finished');
  tt.match(JSON.parse(await text('get')), { n: 1, restored: 0, pid: svc.pid }, 'init(ctx) saw the module arguments (no failure modes): state as left');
  svc.child.kill('SIGINT');
  tt.same(await svc.child.exit(10000), { code: 0, signal: null }, 'SIGINT: exit 0');
});

t.test('refusals: bad module, missing flags, endpoint taken; without an agent: local only', async (tt) => {
  const ns = uniqueNs('serverefuse');
  await startCluster(tt, ns, [1]);
  const base = ['--node', '1', '--namespace', ns];
  const cases: [string, string[], RegExp][] = [
    ['a module without handle()', [fixturePath('svc-bad'), '--dc', '1', '--ep', '10', ...base], /EDVSINVAL: service module .* does not export a handle\(msg\) function/],
    ['a module that does not exist', ['/nonexistent/kv.js', '--dc', '1', '--ep', '10', ...base], /EDVSINVAL: cannot load service module \/nonexistent\/kv.js/],
    ['no --ep', [KV, '--dc', '1', ...base], /EDVSINVAL: dvs serve needs --ep/],
    ['no module', ['--dc', '1', '--ep', '10', ...base], /EDVSINVAL: missing arguments/],
    ['a bad DC', [KV, '--dc', '99999', '--ep', '10', ...base], /EDVSBADDCID/],
    ['an unknown flag', [KV, '--dc', '1', '--ep', '10', '--bogus', 'x', ...base], /unknown flag --bogus/],
    ['--restore and --standby', [KV, '--dc', '1', '--ep', '10', '--restore', '/x', '--standby', ...base], /EDVSINVAL: (restore and standby exclude each other|cannot read the image)/],
  ];
  for (const [what, args, why] of cases) {
    const r = await runCli(tt, ['serve', ...args]);
    tt.equal(r.code, 1, `${what}: exit status 1`);
    tt.match(r.stderr, why, `${what}: ${why}`);
  }
  const first = new ServeProc(tt, [KV, '--dc', '1', '--ep', '10', ...base]);
  await first.until('serving');
  const r = await runCli(tt, ['serve', KV, '--dc', '1', '--ep', '10', ...base]);
  tt.equal(r.code, 1, 'a second service on the same endpoint: exit 1');
  tt.match(r.stderr, /EDVSSLOTUSED/, 'EDVSSLOTUSED');
  first.child.kill('SIGTERM');
  tt.equal((await first.child.exit(10000)).code, 0, 'the first one stops cleanly');

  // No agent for node 7: serves locally, says it is not migratable.
  const lone = new ServeProc(tt, [KV, '--dc', '1', '--ep', '10', '--node', '7', '--namespace', ns]);
  tt.match(await lone.until('serving'), { node: 7, migratable: false }, 'without an agent: serving, not migratable');
  tt.match(lone.child.stderr, /no agent for node 7/, 'and a warning on stderr');
  const n7 = attach({ node: 7, namespace: ns });
  const c = n7.bind(1, 20);
  tt.same(await callJson(c, 10, { op: 'put', key: 'k', value: 1 }), { ok: true, size: 1 }, 'a local client is served');
  lone.child.kill('SIGTERM');
  tt.equal((await lone.child.exit(10000)).code, 0, 'exit 0');
  n7.detach();
  await sleep(50);
  tt.same(shmFiles(ns).filter((f) => f.endsWith('.7')), [], 'node 7\'s segment is gone with its last process');
});
