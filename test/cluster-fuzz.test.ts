// cluster-fuzz.test.ts — 100,000 hostile datagrams at an agent's UDP port
// while it serves real traffic in both directions: random bytes from a
// stranger address and from a member address (node 9 is configured as a peer
// of node 1 and is this test's own socket, so its datagrams pass the
// membership check and reach the parser), mutations of datagrams node 1
// really sent to "node 9" (heartbeats/probes: docs/DESIGN.md "Wire format
// (UDP)", native/net/wire.h), and header-shaped datagrams with a valid
// CRC-32C and random fields. The real traffic must stay exactly-once and in
// order, the agent must stay up, and its counters must show the bad datagrams.
import { createSocket, type Socket } from 'node:dgram';
import t from 'tap';
import { attach } from '../lib/index.js';
import { fnv1a, pattern, shmFiles, sleep, spawnFixture, uniqueNs, within } from './helpers.js';
import { freeUdpPorts, seal, startCluster, waitRemote, type AgentStats } from './cluster-helpers.js';

const DC = 1;
// The header layouts this test knows (native/net/wire.h, by version byte):
// size, and the offset of the u32 body length. Common to all: CRC @0,
// version @4, kind @5, flags @6, source node @8, destination node @12,
// session (incarnations, epochs) @16..40, sequence @40.
const WIRE: Record<number, { hdr: number; bodyLen: number }> = {
  1: { hdr: 56, bodyLen: 48 },
  2: { hdr: 80, bodyLen: 64 },
};

async function bound(port: number): Promise<Socket> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(port, '127.0.0.1', () => resolve());
  });
  return s;
}

/** xorshift32, seeded: the corpus is the same on every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

const badSum = (s: AgentStats): number =>
  ['badMalformed', 'badVersion', 'badOversize', 'badStale', 'badChecksum', 'badSeq'].reduce((a, k) => a + (s.transport[k] ?? 0), 0);

t.test('100k random and mutated datagrams while real traffic flows', async (tt) => {
  const ns = uniqueNs('cl-fuzz');
  const [memberPort, strangerPort] = await freeUdpPorts(2);
  const member = await bound(memberPort);
  const stranger = await bound(strangerPort);
  tt.teardown(() => {
    member.close();
    stranger.close();
  });
  const captured: Buffer[] = [];
  member.on('message', (m) => {
    if (captured.length < 500) captured.push(Buffer.from(m));
  });
  stranger.on('message', () => {});
  const [a1, a2] = await startCluster(tt, ns, [1, 2], { perNode: { 1: { peers: { 9: memberPort } } } });
  const agentPort = a1.opts.port;

  // Real traffic both ways, from this process, interleaved with the fuzz
  // batches (so the two overlap by construction): node 2 -> a receiver process
  // on node 1 (the fuzzed agent delivers) and node 1 -> a receiver on node 2.
  const N = 50000;
  const rx1 = spawnFixture(tt, 'cluster-receiver', [ns, 1, DC, 10, N]);
  const rx2 = spawnFixture(tt, 'cluster-receiver', [ns, 2, DC, 20, N]);
  for (const c of [rx1, rx2]) tt.equal(await within(c.line(), 30000, 'receiver ready'), 'ready');
  await waitRemote(a2, DC, 10);
  await waitRemote(a1, DC, 20);
  const n1 = attach({ node: 1, namespace: ns });
  tt.teardown(() => n1.detach());
  const n2 = attach({ node: 2, namespace: ns });
  tt.teardown(() => n2.detach());
  const s11 = n1.bind(DC, 11), s21 = n2.bind(DC, 21);
  let seq = 0;
  const sendErrors: string[] = [];
  /** `k` messages each way (the cluster-sender payload: seq, src, FNV-1a of the body, size, body). */
  const traffic = async (k: number): Promise<void> => {
    const ps: Promise<void>[] = [];
    for (let i = 0; i < k && seq < N; i++, seq++) {
      for (const [ep, src, dst] of [[s11, 11, 20], [s21, 21, 10]] as const) {
        const b = pattern(64, seq * 31 + src);
        const dv = new DataView(b.buffer);
        dv.setUint32(0, seq, true);
        dv.setUint32(4, src, true);
        dv.setUint32(8, fnv1a(b.subarray(16)), true);
        dv.setUint32(12, 64, true);
        ps.push(ep.send(dst, b, { timeoutMs: 60000 }).catch((e: { code?: string }) => void (sendErrors.length < 10 && sendErrors.push(`${src} seq ${seq}: ${e.code}`))));
      }
    }
    await Promise.all(ps);
  };

  // Datagrams node 1 sends to its member "node 9" (it probes it: the link never comes up).
  const deadline = Date.now() + 10000;
  while (captured.length < 3 && Date.now() < deadline) await sleep(20);
  tt.ok(captured.length >= 3, `captured ${captured.length} datagrams node 1 sent to node 9`);
  if (captured.length < 3) return;
  const dv0 = new DataView(captured[0].buffer, captured[0].byteOffset, captured[0].byteLength);
  const wire = WIRE[captured[0][4]];
  if (!wire) {
    tt.fail(`node 1 speaks wire version ${captured[0][4]}: add its header layout to WIRE in this test`);
    return;
  }
  const HDR = wire.hdr;
  tt.equal(Math.min(...captured.map((b) => b.length)), HDR, `wire version ${captured[0][4]}: the heartbeats are bare ${HDR}-byte headers`);
  tt.equal(dv0.getUint32(8, true), 1, 'from node 1');
  tt.equal(dv0.getUint32(12, true), 9, 'to node 9');

  const before = await a1.stats();

  const rnd = rng(0xdecafbad);
  const int = (n: number): number => Math.floor(rnd() * n);
  const randomBytes = (n: number): Buffer => {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = int(256);
    return b;
  };
  const mutate = (src: Buffer): Buffer => {
    let b = Buffer.from(src);
    const op = int(6);
    if (op === 0) for (let k = 1 + int(4); k > 0; k--) b[int(b.length)] ^= 1 << int(8);  // bit flips
    else if (op === 1) b = b.subarray(0, int(b.length));  // truncated
    else if (op === 2) b = Buffer.concat([b, randomBytes(1 + int(200))]);  // extended
    else if (op === 3) b.writeUInt32LE(int(2 ** 32), 8 + 4 * int((HDR - 8) / 4));  // one random header word
    else if (op === 4) b[5] = int(8);  // another kind
    else b.writeBigUInt64LE(BigInt(int(2 ** 32)) * 65536n, 40);  // another sequence
    if (b.length >= 8 && int(2) === 0) seal(b);  // half of them with a valid CRC: they reach the checks behind it
    return b;
  };
  const shaped = (): Buffer => {
    const body = int(4) === 0 ? 0 : int(300);
    const b = randomBytes(HDR + body);
    b[4] = int(10) === 0 ? int(256) : captured[0][4];  // version
    b[5] = int(5);  // kind 0..4 (1 DATA, 2 ACK, 3 HEARTBEAT)
    b.writeUInt16LE(int(3), 6);
    b.writeUInt32LE(int(3) === 0 ? int(1024) : 9, 8);  // src node
    b.writeUInt32LE(int(4) === 0 ? int(1024) : 1, 12);  // dst node
    if (int(2)) captured[int(captured.length)].copy(b, 16, 16, 40);  // a real session (incarnations, epochs)
    b.writeBigUInt64LE(BigInt(int(20000)), 40);  // seq
    b.writeUInt32LE(int(5) === 0 ? int(2 ** 32) : body, wire.bodyLen);  // body length
    if (b[5] === 1 && body >= 8) {
      // a DATA chunk header that claims some message length and offset
      b.writeUInt32LE(int(3) === 0 ? int(2 ** 32) : int(2000), HDR);
      b.writeUInt32LE(int(3) === 0 ? int(2 ** 32) : int(body), HDR + 4);
    }
    seal(b);
    return b;
  };

  const plan: [string, Socket, () => Buffer, number][] = [
    ['random bytes from a stranger', stranger, () => randomBytes(int(1500)), 25000],
    ['random bytes from a member', member, () => randomBytes(int(1500)), 25000],
    ['mutated captured datagrams from a member', member, () => mutate(captured[int(captured.length)]), 25000],
    ['header-shaped datagrams with a valid CRC from a member', member, shaped, 25000],
  ];
  const t0 = Date.now();
  let total = 0;
  for (const [, sock, gen, n] of plan) {
    for (let i = 0; i < n; i += 250) {
      const batch = Math.min(250, n - i);
      await new Promise<void>((resolve, reject) => {
        let left = batch;
        for (let k = 0; k < batch; k++)
          sock.send(gen(), agentPort, '127.0.0.1', (e) => {
            if (e) reject(e);
            else if (--left === 0) resolve();
          });
      });
      total += batch;
      await within(traffic(125), 60000, 'real traffic between fuzz batches');
    }
  }
  tt.equal(total, 100000, `sent 100,000 hostile datagrams in ${Date.now() - t0} ms`);
  tt.equal(seq, N, `${N} real messages each way were sent between the fuzz batches`);
  tt.same(sendErrors, [], 'every real send was acknowledged');

  const r1 = await within(rx1.json<{ received: number; perSrc: Record<string, number>; errors: string[] }>(90000), 90000, 'receiver on node 1');
  const r2 = await within(rx2.json<{ received: number; perSrc: Record<string, number>; errors: string[] }>(90000), 90000, 'receiver on node 2');
  tt.same(r1.errors, [], 'node 2 -> node 1: no gap, duplicate, reordering or corruption');
  tt.same(r1.perSrc, { 21: N }, `node 1 received all ${N}`);
  tt.same(r2.errors, [], 'node 1 -> node 2: no gap, duplicate, reordering or corruption');
  tt.same(r2.perSrc, { 11: N }, `node 2 received all ${N}`);
  n1.detach();
  n2.detach();
  for (const c of [rx1, rx2]) tt.same(await c.exit(), { code: 0, signal: null }, `${c.name} exited cleanly`);

  // The agent is up and still answers; the garbage was counted, not used.
  tt.notOk(a1.child.exited, 'agent 1 is still running');
  await sleep(200);  // stats are refreshed every 50 ms
  const after = await a1.stats();
  const strangers = after.transport.badStranger - before.transport.badStranger;
  const bad = badSum(after) - badSum(before);
  tt.ok(strangers >= 12500, `${strangers} datagrams counted as from strangers (25,000 sent from a stranger address, more claim another node)`);
  tt.ok(bad >= 37500, `${bad} member datagrams rejected by validation (of 75,000 sent; some header-shaped ones are valid)`);
  tt.comment(`node 1 transport counters after the fuzz: ${JSON.stringify(after.transport)}; engine badFrames ${after.badFrames}`);
  const st = await a1.status();
  tt.ok(st.peers.find((p) => p.node === 2)?.up, 'the link to node 2 is still up');
  tt.same(await a1.stop(), { code: 0, signal: null }, 'agent 1 stops cleanly');
  tt.same(await a2.stop(), { code: 0, signal: null }, 'agent 2 stops cleanly');
  tt.same(shmFiles(ns), [], 'no segment left');
});
