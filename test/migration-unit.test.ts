// migration-unit.test.ts — the pieces of lib/migration that need no
// process: location pins (what the data plane is told while a migration
// moves an endpoint, whatever order the directory's news comes in) and the
// validation of {k:'mig'} messages and image chunks from peers.
import t from 'tap';
import type { DirectoryEntry } from '../lib/directory/directory.js';
import { Pins, RELEASE_AFTER_MS } from '../lib/migration/pins.js';
import { CHUNK_BYTES, CHUNK_HEADER, chunkHeader, decodeChunk, fromInfo, parseMig, toInfo } from '../lib/migration/protocol.js';
import { DvsError } from '../lib/errors.js';

const SELF = 3;
const e = (ep: number, gen: number, pid = 100): DirectoryEntry => ({ dc: 1, ep, gen, pid });

/** Pins on node SELF, recording what each node's proxies are set to. */
function setup(): { pins: Pins; applied: Map<number, string> } {
  const applied = new Map<number, string>();
  const pins = new Pins({ self: SELF, apply: (node, eps) => applied.set(node, eps.map((x) => `${x.ep}@${x.gen}`).join(',')), log: () => {} });
  return { pins, applied };
}

t.test('pins: START keeps the source, COMMIT repoints at once, the directory takes over when it agrees', async (tt) => {
  const { pins, applied } = setup();
  pins.set(1, [e(10, 7), e(11, 1)]);  // node 1 has the service (10) and another endpoint
  pins.set(2, [e(20, 1)]);
  tt.same([applied.get(1), applied.get(2)], ['10@7,11@1', '20@1'], 'without pins: the directory as given');
  // START: pinned to node 1. An early announcement by node 2 of endpoint 10 is hidden.
  pins.pin(1, 10, 1, 7, 100, '', true);
  pins.set(2, [e(10, 3), e(20, 1)]);
  tt.equal(applied.get(2), '20@1', "while pinned to node 1, node 2's listing of it is ignored");
  // COMMIT: pinned to node 2 with its incarnation: node 2's entry is installed first, node 1's hidden.
  const order: number[] = [];
  const p2 = new Pins({ self: SELF, apply: (n) => order.push(n), log: () => {} });
  p2.set(1, [e(10, 7)]);
  p2.set(2, []);
  order.length = 0;
  p2.pin(1, 10, 2, 3, 200, '', true);
  tt.same(order, [2, 1], 'a pin moving from node 1 to node 2 installs node 2 first (the proxy is repointed, not retired)');
  pins.set(2, [e(20, 1)]);  // node 2's own list does not show it yet
  pins.pin(1, 10, 2, 3, 200, '', true);
  tt.same([applied.get(1), applied.get(2)], ['11@1', '10@3,20@1'], 'committed: node 2 holds it (synthesized), node 1 does not');
  pins.release(1, 10);
  pins.set(1, [e(10, 7), e(11, 1)]);  // a stale announcement of node 1
  tt.equal(applied.get(1), '11@1', "a stale listing by the old node is still hidden after the commit");
  tt.equal(pins.size, 1, 'the pin stays until the directory agrees');
  pins.set(2, [e(10, 3), e(20, 1)]);
  tt.equal(pins.size, 1, 'node 2 lists it, node 1 still too: the pin stays');
  pins.set(1, [e(11, 1)]);
  tt.equal(pins.size, 0, 'node 2 lists it and nobody else: the pin is gone');
  tt.same([applied.get(1), applied.get(2)], ['11@1', '10@3,20@1'], 'the directory alone now says the same');
});

t.test('pins: rollback, a destination that stops listing, a forgotten node, expiry, a pin to this node', async (tt) => {
  const { pins, applied } = setup();
  pins.set(1, [e(10, 7)]);
  pins.pin(1, 10, 1, 7, 100, '', true);
  pins.set(2, [e(10, 3)]);
  tt.equal(applied.get(2), '', 'hidden while the migration runs');
  pins.unpin(1, 10);
  tt.same([applied.get(1), applied.get(2), pins.size], ['10@7', '10@3', 0], 'rollback: the directory decides again');

  pins.set(2, []);
  pins.pin(1, 10, 2, 3, 200, '', false);
  pins.set(2, [e(10, 3)]);
  pins.set(2, []);
  tt.same([pins.size, applied.get(2), applied.get(1)], [0, '', '10@7'], 'confirmed, then no longer listed by node 2: the endpoint left it, the pin goes');

  pins.pin(1, 10, 2, 3, 200, '', false);
  tt.equal(applied.get(2), '10@3', 'pinned to node 2 again');
  pins.forget(2);
  tt.same([pins.size, applied.get(1)], [0, '10@7'], 'node 2 forgotten: its pins go');

  pins.pin(1, 10, 2, 3, 200, '', false);
  pins.expire(Date.now() + RELEASE_AFTER_MS - 1000);
  tt.equal(pins.size, 1, 'an unconfirmed pin stays a while');
  pins.expire(Date.now() + RELEASE_AFTER_MS + 1000);
  tt.same([pins.size, applied.get(1)], [0, '10@7'], 'and goes after RELEASE_AFTER_MS');

  pins.pin(1, 10, SELF, 0, 300, '', true);
  tt.equal(applied.get(1), '', 'pinned to this node (the destination after adopt): every other listing is hidden');
  tt.same(pins.pinned(1, 10), { node: SELF, gen: 0, pid: 300 }, 'pinned() says where');
  pins.release(1, 10);
  tt.equal(pins.size, 1, 'released, but node 1 still lists it: kept');
  pins.set(1, []);
  tt.equal(pins.size, 0, 'node 1 stops listing it: gone');
  const held = pins.effective(SELF);
  tt.same(held, [], 'this node is never given a list of its own');
});

t.test('protocol: messages from peers are validated field by field', async (tt) => {
  const start = { t: 'start', id: 5, dc: 1, ep: 10, src: 1, gen: 2, pid: 3, name: '' };
  tt.same(parseMig(start), start, 'a good start');
  const prep = { ...start, t: 'prepare', module: '/x/kv.js', args: ['a'], timeoutMs: 1000 };
  tt.same(parseMig(prep), prep, 'a good prepare');
  const bad: [string, unknown][] = [
    ['not an object', 'start'],
    ['an array', [start]],
    ['unknown t', { ...start, t: 'boom' }],
    ['id negative', { ...start, id: -1 }],
    ['id too big', { ...start, id: 2 ** 32 }],
    ['dc out of range', { ...start, dc: 4096 }],
    ['ep not an integer', { ...start, ep: 1.5 }],
    ['node out of range', { ...start, src: 1024 }],
    ['name too long', { ...start, name: 'x'.repeat(40) }],
    ['relative module', { ...prep, module: 'kv.js' }],
    ['module with NUL', { ...prep, module: '/x\0y' }],
    ['args not strings', { ...prep, args: [1] }],
    ['timeout 0', { ...prep, timeoutMs: 0 }],
    ['restore: too many chunks', { t: 'restore', id: 1, bytes: 10, chunks: 1e9, timeoutMs: 1, commitTimeoutMs: 1 }],
    ['restore: image too big', { t: 'restore', id: 1, bytes: 2 ** 40, chunks: 1, timeoutMs: 1, commitTimeoutMs: 1 }],
    ['commit without gen', { t: 'commit', id: 1, dest: 2, pid: 3, timeoutMs: 5 }],
    ['reply with an unknown step', { t: 're', id: 1, step: 'x', ok: true }],
    ['failed reply without error', { t: 're', id: 1, step: 'start', ok: false }],
    ['reply with a bad error', { t: 're', id: 1, step: 'start', ok: false, error: { code: 5 } }],
    ['run with an unknown method', { t: 'run', rid: 1, dc: 1, ep: 10, to: 2, method: 'magic' }],
    ['ok result without result', { t: 'result', rid: 1, ok: true }],
    ['progress with another state', { t: 'progress', id: 1, state: 'committed' }],
  ];
  for (const [what, m] of bad) tt.equal(parseMig(m), null, `refused: ${what}`);
  tt.ok(parseMig({ t: 're', id: 1, step: 'restore', ok: false, error: { code: 'EDVSINVAL', message: 'x' } }), 'a failed reply with its error');
  tt.ok(parseMig({ t: 'run', rid: 1, dc: 1, ep: 10, to: 2, method: 'criu' }), 'run with any known method (the source refuses what it cannot do)');
});

t.test('protocol: image chunks and errors', async (tt) => {
  const frame = Buffer.alloc(CHUNK_HEADER + 5);
  chunkHeader(frame, 0xfffffffe, 7);
  frame.set([1, 2, 3, 4, 5], CHUNK_HEADER);
  const c = decodeChunk(frame)!;
  tt.same([c.id, c.index, [...c.bytes]], [0xfffffffe, 7, [1, 2, 3, 4, 5]], 'a chunk round-trips');
  tt.equal(decodeChunk(frame.subarray(0, 5)), null, 'a truncated header is refused');
  const wrong = Buffer.from(frame);
  wrong[0] = 0x7b;
  tt.equal(decodeChunk(wrong), null, 'a frame without the binary tag is refused');
  tt.equal(decodeChunk(Buffer.alloc(CHUNK_HEADER + CHUNK_BYTES + 1, 1)), null, 'an oversized chunk is refused');
  const info = toInfo(new DvsError('EDVSBUSY', 'taken'));
  tt.same(info, { code: 'EDVSBUSY', message: 'taken' }, 'a DvsError travels as code and message');
  tt.equal(fromInfo(info).code, 'EDVSBUSY', 'and comes back as the same code');
  const odd = fromInfo({ code: 'ERROR', message: 'restore() threw' }, 'node 2: ');
  tt.same([odd.code, odd.message], ['EDVSINVAL', 'EDVSINVAL: node 2: ERROR: restore() threw'], 'an unknown code becomes EDVSINVAL, named in the text');
});
