// cluster-invoker.test.ts — embedded agents in invoker mode (startAgent({
// invoker: true })): no engine thread, the process's event loop and its
// blocking waits run the transport. Two child processes (fixtures/
// invoker-node.ts), each embedding its node's agent and attached to its node,
// remote-controlled through stdin/stdout: the async API in both directions
// (exactly-once, in order), the sync API spinning and sleeping (only works if
// the waits drive the engine), fault injection, a peer SIGKILLed while the
// other waits (async and sync), and a thread-mode process talking to an
// invoker-mode one.
//
// Caveat respected throughout: an embedded agent's control plane (endpoint
// announcements) runs on the JS event loop, so a process only enters a
// synchronous loop after the peer has seen its endpoints (waitRemote on both
// sides first).
import { rmSync } from 'node:fs';
import t from 'tap';
import { shmFiles, spawnFixture, uniqueNs, within, type Child, type T } from './helpers.js';
import { freeUdpPorts } from './cluster-helpers.js';

const used: string[] = [];
const DEAD_AFTER = 1000;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Res = Record<string, any>;

/** One fixture process: commands by id, answers dispatched as they come (several may be outstanding). */
class Proc {
  private nextId = 1;
  private waiting = new Map<number, (r: Res) => void>();
  readonly ready: Promise<Res>;

  constructor(
    readonly child: Child,
    readonly node: number,
    readonly port: number,
  ) {
    let gotReady!: (r: Res) => void;
    this.ready = new Promise((r) => (gotReady = r));
    void (async () => {
      for (;;) {
        let line: string;
        try {
          line = await child.line(1 << 30);
        } catch {
          return;  // exited
        }
        let r: Res;
        try {
          r = JSON.parse(line) as Res;
        } catch {
          r = { id: -1, garbage: line };
        }
        if (r.ready) {
          gotReady(r);
          continue;
        }
        const w = this.waiting.get(r.id);  // (registered before the command was sent)
        this.waiting.delete(r.id);
        w?.(r);
      }
    })();
  }

  /** Starts a command; resolves with its answer (bounded by `ms`, or when the process exits). */
  cmd(op: string, a: Res = {}, ms = 60000): Promise<Res> {
    const id = this.nextId++;
    const p = new Promise<Res>((resolve) => this.waiting.set(id, resolve));
    this.child.send(JSON.stringify({ id, op, ...a }));
    const exited = this.child.exit(1 << 30).then((e) => ({ id, error: 'EXITED', message: `node ${this.node} exited (${e.code ?? e.signal}); stderr: ${this.child.stderr.trim()}` }));
    return within(Promise.race([p, exited]), ms, `node ${this.node}: ${op} ${JSON.stringify(a)}; stderr: ${this.child.stderr.trim()}`);
  }

  /** A command that must succeed: throws (with the process's answer) otherwise. */
  async ok(op: string, a: Res = {}, ms = 60000): Promise<Res> {
    const r = await this.cmd(op, a, ms);
    if (r.error) throw new Error(`node ${this.node}: ${op} failed: ${r.error} ${r.message}`);
    return r;
  }

  /** Graceful exit (stdin "quit": detach, agent.stop(), exit 0). */
  async quit(): Promise<{ code: number | null; signal: string | null }> {
    await this.cmd('quit', {}, 10000).catch(() => {});
    return this.child.exit(10000);
  }
}

interface NodeSpec {
  invoker: boolean;
  /** asyncSpinUs of the process's attachment (default: the library's). */
  asyncSpinUs?: number;
}

/** Spawns the process of `node` (peer `peer`) and waits for it to be ready. */
async function spawnNode(tt: T, ns: string, node: number, port: number, peer: number, peerPort: number, spec: NodeSpec): Promise<Proc> {
  const env: Record<string, string> = spec.asyncSpinUs !== undefined ? { DVS_TEST_SPIN: String(spec.asyncSpinUs) } : {};
  const c = spawnFixture(tt, 'invoker-node', [ns, node, port, peer, peerPort, spec.invoker ? 1 : 0, DEAD_AFTER], env);
  const p = new Proc(c, node, port);
  tt.teardown(async () => {
    if (!c.exited) {
      c.kill('SIGKILL');
      await c.exit(10000).catch(() => {});
    }
  });
  const r = await within(p.ready, 30000, `node ${node} ready; stderr: ${c.stderr}`);
  if (r.port !== port) throw new Error(`node ${node} listens on ${r.port}, not ${port}`);
  return p;
}

/** Two processes, nodes 1 and 2, links up. Leftover segments are removed after teardown's kills (a failed test must not leak). */
async function pair(tt: T, name: string, specs: [NodeSpec, NodeSpec]): Promise<{ a: Proc; b: Proc; ns: string; ports: number[] }> {
  const ns = uniqueNs(name);
  used.push(ns);
  const ports = await freeUdpPorts(2);
  const [a, b] = await Promise.all([spawnNode(tt, ns, 1, ports[0], 2, ports[1], specs[0]), spawnNode(tt, ns, 2, ports[1], 1, ports[0], specs[1])]);
  tt.teardown(async () => {
    for (const p of [a, b]) {
      if (!p.child.exited) {
        p.child.kill('SIGKILL');
        await p.child.exit(10000).catch(() => {});
      }
    }
    for (const f of shmFiles(ns)) rmSync(`/dev/shm/${f}`, { force: true });
  });
  await Promise.all([a.ok('waitPeer'), b.ok('waitPeer')]);
  return { a, b, ns, ports };
}

/** Binds the endpoints and waits until each process's agent has seen the other's (the control plane needs the event loop). */
async function bindBoth(a: Proc, aEps: number[], b: Proc, bEps: number[]): Promise<void> {
  for (const ep of aEps) await a.ok('bind', { ep });
  for (const ep of bEps) await b.ok('bind', { ep });
  for (const ep of bEps) await a.ok('waitRemote', { ep });
  for (const ep of aEps) await b.ok('waitRemote', { ep });
}

async function quitBoth(tt: T, ns: string, ...ps: Proc[]): Promise<void> {
  for (const p of ps) tt.same(await p.quit(), { code: 0, signal: null }, `node ${p.node}: exits cleanly (${p.child.stderr.trim()})`);
  tt.same(shmFiles(ns), [], 'no segment left');
}

const plus1 = (a: number[]): number[] => a.map((b) => (b + 1) & 0xff);

/** Polls the agent's stats until `pred` holds for its peer's row (bounded; the engine refreshes them every ~50 ms). */
async function peerStats(p: Proc, pred: (row: Res) => boolean, ms = 5000): Promise<Res> {
  const deadline = Date.now() + ms;
  for (;;) {
    const s = (await p.ok('stats')).stats as { peers: Res[] };
    const row = s.peers.find((r) => r.node === 3 - p.node) ?? {};
    if (pred(row) || Date.now() > deadline) return row;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * `count` pipelined sends (trySend || send, sequence-numbered) from endpoint 10
 * (node 1) to 20 (node 2) and from 20 to 10 at the same time; each side sinks
 * with receive({ from }) and checks exactly-once, in-order, intact delivery.
 */
async function streamBoth(tt: T, a: Proc, b: Proc, count: number, size: number, names = ['node 1', 'node 2']): Promise<void> {
  const sinks = [b.cmd('sink', { ep: 20, from: 10, count, size }, 120000), a.cmd('sink', { ep: 10, from: 20, count, size }, 120000)];
  const streams = await Promise.all([a.cmd('stream', { ep: 10, dst: 20, count, size }, 120000), b.cmd('stream', { ep: 20, dst: 10, count, size }, 120000)]);
  streams.forEach((st, i) =>
    tt.same([st.error, st.sent, st.failedSends], [undefined, count, 0], `${names[i]}: ${count} sends accepted and none refused (${st.blocked} had to wait) ${st.message ?? ''}`),
  );
  (await Promise.all(sinks)).forEach((sk, i) =>
    tt.same(
      { error: sk.error, received: sk.received, next: sk.next, bad: sk.bad, disorder: sk.disorder, extra: sk.extra },
      { error: undefined, received: count, next: count, bad: 0, disorder: 0, extra: 0 },
      `${names[1 - i]}: got all ${count} exactly once, in order, intact ${JSON.stringify(sk.firstBad ?? sk.message)}`,
    ),
  );
}

/** `count` async calls from 10 (node 1) to 22 (node 2) and from 20 to 12, at the same time, `window` outstanding each; needs the echo servers on 12 and 22. */
async function callsBoth(tt: T, a: Proc, b: Proc, count: number, window: number, names = ['node 1', 'node 2']): Promise<void> {
  const [ca, cb] = await Promise.all([
    a.cmd('callsAsync', { ep: 10, dst: 22, count, window, salt: 1 }, 120000),
    b.cmd('callsAsync', { ep: 20, dst: 12, count, window, salt: 2 }, 120000),
  ]);
  tt.same([ca.ok, ca.bad, ca.errors], [count, 0, []], `${names[0]} -> ${names[1]}: ${count} pipelined async calls answered correctly ${ca.message ?? ''}`);
  tt.same([cb.ok, cb.bad, cb.errors], [count, 0, []], `${names[1]} -> ${names[0]}: ${count} pipelined async calls answered correctly ${cb.message ?? ''}`);
}

t.test('invoker mode, async API across nodes: send, call, notify, receive({ from }); 20k pipelined sends exactly once in order, both ways', async (tt) => {
  // Node 1 polls asynchronously (default asyncSpinUs: OnPrepare drives the engine too); node 2 never polls
  // (asyncSpinUs 0: only the uv_poll on the engine's epoll fd drives it).
  const { a, b, ns } = await pair(tt, 'inv-async', [{ invoker: true }, { invoker: true, asyncSpinUs: 0 }]);
  await bindBoth(a, [10, 11, 12], b, [20, 21, 22]);

  for (const [x, y] of [[a, b], [b, a]] as const) {
    const xe = x.node * 10, ye = y.node * 10, xo = xe + 1;
    const dir = `node ${x.node} -> node ${y.node}`;
    const s = await x.cmd('send', { ep: xe, dst: ye, text: `hello from ${x.node}`, timeoutMs: 10000 });
    tt.same([s.error, s.ok], [undefined, true], `${dir}: the send is acknowledged (${s.message ?? ''})`);
    const m = await y.ok('receive', { ep: ye, timeoutMs: 10000 });
    tt.same([m.kind, m.src, m.srcNode, m.text], ['send', xe, x.node, `hello from ${x.node}`], `${dir}: the send arrives with its source`);

    const call = x.cmd('call', { ep: xe, dst: ye, bytes: [1, 2, 3], timeoutMs: 10000 });
    const c = await y.ok('receive', { ep: ye, timeoutMs: 10000 });
    tt.same([c.kind, c.src, c.srcNode, c.bytes], ['call', xe, x.node, [1, 2, 3]], `${dir}: the call arrives`);
    await y.ok('reply', { held: c.held, text: 're:1,2,3' });
    const r = await call;
    tt.same([r.error, r.kind, r.src, r.srcNode, r.text], [undefined, 'reply', ye, y.node, 're:1,2,3'], `${dir}: the caller gets the reply`);

    await x.ok('notify', { ep: xe, dst: ye, bits: 0b101 });
    const n = await y.ok('receive', { ep: ye, timeoutMs: 10000 });
    tt.same([n.kind, n.src, n.bits], ['notify', xe, 0b101], `${dir}: the notification arrives with its bits`);

    // Both sends acknowledged (in ye's mailbox) before the selective receive.
    await x.ok('send', { ep: xo, dst: ye, text: 'other', timeoutMs: 10000 });
    await x.ok('send', { ep: xe, dst: ye, text: 'mine', timeoutMs: 10000 });
    const sel = await y.ok('receive', { ep: ye, from: xe, timeoutMs: 10000 });
    tt.same([sel.src, sel.text], [xe, 'mine'], `${dir}: receive({ from }) picks the message of that source`);
    const rest = await y.ok('receive', { ep: ye, timeoutMs: 10000 });
    tt.same([rest.src, rest.text], [xo, 'other'], `${dir}: the other one stayed queued`);
  }

  // Pipelined sends, both directions at once: each process streams and sinks concurrently.
  await streamBoth(tt, a, b, 20000, 64);

  // Pipelined calls, both directions at once (echo servers on 12 and 22).
  await a.ok('echo', { ep: 12 });
  await b.ok('echo', { ep: 22 });
  await callsBoth(tt, a, b, 2000, 64);

  await quitBoth(tt, ns, a, b);
});

async function syncRound(tt: T, a: Proc, b: Proc, spinUs: number | 'Infinity', count: number): Promise<void> {
  for (const [client, server] of [[a, b], [b, a]] as const) {
    const ce = client.node * 10 + 30, se = server.node * 10 + 30;
    const dir = `node ${client.node} -> node ${server.node}`;
    // The server blocks its event loop in receiveSync; the client in callSync: no event loop runs on either side.
    const serving = server.cmd('serveSync', { ep: se, count, spinUs }, 120000);
    const calling = client.cmd('callsSync', { ep: ce, dst: se, count, spinUs, salt: client.node }, 120000);
    const [s, c] = await Promise.all([serving, calling]);
    tt.same({ ok: c.ok, bad: c.bad, error: c.error ?? c.message }, { ok: count, bad: 0, error: undefined }, `${dir}: ${count} callSync (spinUs ${spinUs}) answered correctly`);
    tt.comment(`${dir}: ${count} callSync (spinUs ${spinUs}): ${Math.round(c.us / count)} µs per call (information, not asserted)`);
    tt.same({ served: s.served, other: s.other, error: s.error ?? s.message }, { served: count, other: 0, error: undefined }, `${dir}: the server answered ${count} calls with receiveSync (spinUs ${spinUs})`);
  }
}

t.test('invoker mode, sync API spinning (spinUs: Infinity) on both sides: the waits drive the engines', async (tt) => {
  const { a, b, ns } = await pair(tt, 'inv-spin', [{ invoker: true }, { invoker: true }]);
  await bindBoth(a, [40], b, [50]);
  await syncRound(tt, a, b, 'Infinity', 3000);
  await quitBoth(tt, ns, a, b);
});

t.test('invoker mode, sync API without spinning (spinUs: 0): the waits sleep in the engine and calls complete', async (tt) => {
  const { a, b, ns } = await pair(tt, 'inv-sleep', [{ invoker: true }, { invoker: true }]);
  await bindBoth(a, [40], b, [50]);
  await syncRound(tt, a, b, 0, 1000);
  await quitBoth(tt, ns, a, b);
});

t.test('invoker mode under fault injection (loss 10 %, dup 5 %, reorder 5 %): exactly once, in order; retransmits happened', async (tt) => {
  const { a, b, ns } = await pair(tt, 'inv-fault', [{ invoker: true }, { invoker: true }]);
  await bindBoth(a, [10, 12, 40], b, [20, 22, 50]);
  // (The stats are a snapshot the engine refreshes: wait until it lists the peer.)
  const before = await Promise.all([peerStats(a, (r) => r.up === true), peerStats(b, (r) => r.up === true)]);
  tt.same([before[0].up, before[1].up], [true, true], 'both agents list their peer in their stats');
  const fault = { loss: 0.1, dup: 0.05, reorder: 0.05 };
  await a.ok('setFault', { fault });
  await b.ok('setFault', { fault });

  await streamBoth(tt, a, b, 4000, 200);

  // Calls under loss: async both ways, then sync without spinning (only the sleeping wait's timer can drive the retransmits).
  await a.ok('echo', { ep: 12 });
  await b.ok('echo', { ep: 22 });
  await callsBoth(tt, a, b, 500, 16);
  await syncRound(tt, a, b, 0, 300);

  const after = await Promise.all([peerStats(a, (r) => r.retransmits > before[0].retransmits), peerStats(b, (r) => r.retransmits > before[1].retransmits)]);
  // The faults were in effect on both sides (the transports counted them)...
  for (const p of [a, b]) {
    const tr = ((await p.ok('stats')).stats as { transport: Res }).transport;
    tt.ok(tr.faultDropped > 0 && tr.faultDuplicated > 0 && tr.faultReordered > 0, `node ${p.node}: datagrams were dropped, duplicated and reordered (${tr.faultDropped}, ${tr.faultDuplicated}, ${tr.faultReordered})`);
  }
  // ...and were repaired: retransmits, duplicates discarded.
  tt.ok(after[0].retransmits > before[0].retransmits, `node 1 retransmitted (${before[0].retransmits} -> ${after[0].retransmits})`);
  tt.ok(after[1].retransmits > before[1].retransmits, `node 2 retransmitted (${before[1].retransmits} -> ${after[1].retransmits})`);
  tt.ok(after[0].dupDropped + after[1].dupDropped > before[0].dupDropped + before[1].dupDropped, `duplicates were dropped (${after[0].dupDropped} + ${after[1].dupDropped})`);

  await a.ok('setFault', { fault: { loss: 0, dup: 0, reorder: 0 } });
  await b.ok('setFault', { fault: { loss: 0, dup: 0, reorder: 0 } });
  await quitBoth(tt, ns, a, b);
});

t.test(`invoker mode: a peer process SIGKILLed while the other waits in a call -> EDVSNOTCONN within dead-after (${DEAD_AFTER} ms) + margin`, async (tt) => {
  const { a, b, ns, ports } = await pair(tt, 'inv-kill', [{ invoker: true }, { invoker: true }]);
  await bindBoth(a, [10], b, [20]);

  // Async: node 1's call is held by node 2, whose process (with its agent) is then killed.
  const call = a.cmd('call', { ep: 10, dst: 20, text: 'hold me' }, 30000);
  const held = await b.ok('receive', { ep: 20, timeoutMs: 10000 });
  tt.same([held.kind, held.text], ['call', 'hold me'], 'node 2 holds the call');
  b.child.kill('SIGKILL');
  const t0 = Date.now();
  const r = await within(call, 5000, 'the waiting async caller to be told');
  const elapsed = Date.now() - t0;
  tt.equal(r.error, 'EDVSNOTCONN', `the async call failed with EDVSNOTCONN (${r.error ?? 'resolved'} ${r.message ?? ''})`);
  tt.ok(elapsed < 5000, `told ${elapsed} ms after the kill (dead-after ${DEAD_AFTER} ms)`);
  tt.equal((await b.child.exit(10000)).signal, 'SIGKILL');
  const st = (await a.ok('status')).status as { peers: { node: number; up: boolean }[] };
  tt.same(st.peers.map((p) => [p.node, p.up]), [[2, false]], 'node 1 sees node 2 down');
  const again = await a.cmd('call', { ep: 10, dst: 20, text: 'while down', timeoutMs: 5000 });
  tt.equal(again.error, 'EDVSNOTCONN', 'a new call while node 2 is down: EDVSNOTCONN');

  // Node 2 again (same port; it recovers the segment the killed process left), then the same with a sync caller.
  const b2 = await spawnNode(tt, ns, 2, ports[1], 1, ports[0], { invoker: true });
  await Promise.all([a.ok('waitPeer'), b2.ok('waitPeer')]);
  await b2.ok('bind', { ep: 20 });
  await a.ok('waitRemote', { ep: 20 });
  await b2.ok('waitRemote', { ep: 10 });
  await b2.ok('echo', { ep: 20 });
  const ok = await a.cmd('callsAsync', { ep: 10, dst: 20, count: 100, window: 8 });
  tt.same([ok.ok, ok.bad], [100, 0], 'calls to the restarted node 2 work');
  await b2.ok('bind', { ep: 21 });
  await a.ok('waitRemote', { ep: 21 });
  const heldS = b2.ok('receive', { ep: 21, timeoutMs: 10000 });
  const sync = a.cmd('callSyncHold', { ep: 10, dst: 21, text: 'hold me too', spinUs: 0 }, 30000);
  tt.same((await heldS).text, 'hold me too', 'node 2 holds the sync call');
  b2.child.kill('SIGKILL');
  const t1 = Date.now();
  const rs = await within(sync, 5000, 'the waiting sync caller to be told');
  const elapsedS = Date.now() - t1;
  tt.equal(rs.result, 'EDVSNOTCONN', `the sync call (sleeping in the engine) failed with EDVSNOTCONN (${rs.result ?? rs.error})`);
  tt.ok(elapsedS < 5000, `told ${elapsedS} ms after the kill`);
  await b2.child.exit(10000);

  // A third node 2 process recovers the segment and leaves nothing behind when it quits.
  const b3 = await spawnNode(tt, ns, 2, ports[1], 1, ports[0], { invoker: true });
  await Promise.all([a.ok('waitPeer'), b3.ok('waitPeer')]);
  await quitBoth(tt, ns, a, b3);
});

t.test('a thread-mode process (invoker false) on node 1 and an invoker-mode one on node 2 interoperate', async (tt) => {
  const { a, b, ns } = await pair(tt, 'inv-mixed', [{ invoker: false }, { invoker: true }]);
  await bindBoth(a, [10, 12, 40], b, [20, 22, 50]);
  await a.ok('echo', { ep: 12 });
  await b.ok('echo', { ep: 22 });

  // Simple call both ways.
  const r1 = await a.ok('call', { ep: 10, dst: 22, bytes: [9, 8], timeoutMs: 10000 });
  tt.same([r1.src, r1.srcNode, r1.bytes], [22, 2, plus1([9, 8])], 'thread mode -> invoker mode: a call is answered');
  const r2 = await b.ok('call', { ep: 20, dst: 12, bytes: [7], timeoutMs: 10000 });
  tt.same([r2.src, r2.srcNode, r2.bytes], [12, 1, plus1([7])], 'invoker mode -> thread mode: a call is answered');

  await streamBoth(tt, a, b, 10000, 64, ['node 1 (thread)', 'node 2 (invoker)']);

  await callsBoth(tt, a, b, 1000, 32, ['node 1 (thread)', 'node 2 (invoker)']);

  // Sync callers against the other side's async server, then sync on both sides.
  for (const spinUs of [0, 'Infinity'] as const) {
    const sa = await a.cmd('callsSync', { ep: 40, dst: 22, count: 500, spinUs, salt: 7 }, 60000);
    tt.same({ ok: sa.ok, bad: sa.bad, error: sa.error ?? sa.message }, { ok: 500, bad: 0, error: undefined }, `thread mode callSync (spinUs ${spinUs}) -> invoker mode async server`);
    const sb = await b.cmd('callsSync', { ep: 50, dst: 12, count: 500, spinUs, salt: 8 }, 60000);
    tt.same({ ok: sb.ok, bad: sb.bad, error: sb.error ?? sb.message }, { ok: 500, bad: 0, error: undefined }, `invoker mode callSync (spinUs ${spinUs}) -> thread mode async server`);
  }
  await syncRound(tt, a, b, 0, 500);
  await syncRound(tt, a, b, 'Infinity', 500);

  await quitBoth(tt, ns, a, b);
});

t.test('nothing left behind', async (tt) => {
  for (const ns of used) tt.same(shmFiles(ns), [], `no /dev/shm/dvs.${ns}.*`);
});
