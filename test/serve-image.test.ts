// serve-image.test.ts — the service image of the `state` backend
// (lib/serve/image.ts): round trips, and every way a file can be wrong —
// truncated at every length, each byte flipped, a wrong version or magic, and
// hostile images with a valid checksum but lying lengths and fields — is a
// DvsError EDVSINVAL, never another exception. Also `dvs serve --restore` of a
// corrupt file: exit status 1 and the EDVSINVAL message, nothing left behind.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import t from 'tap';
import {
  decodeImage,
  encodeImage,
  imageExpectedReplies,
  readImageFile,
  writeImageFile,
  IMAGE_HEADER_BYTES,
  IMAGE_MESSAGE_HEADER_BYTES,
  IMAGE_TRAILER_BYTES,
  type ServiceImage,
} from '../lib/serve/image.js';
import { runCli } from './cluster-helpers.js';
import { pattern, ROOT, shmFiles, uniqueNs } from './helpers.js';

const KV = resolve(ROOT, 'examples', 'kv.js');

function sample(): ServiceImage {
  return {
    id: 77,
    dc: 3,
    ep: 4100,
    node: 2,
    module: KV,
    args: ['a', 'b c', 'é'],
    name: 'kv',
    state: pattern(5000, 9),
    messages: [
      { kind: 'send', src: 20, srcNode: 1, srcGen: 5, callId: 0, bits: 0, payload: new TextEncoder().encode('{"seq":1}') },
      { kind: 'call', src: 21, srcNode: 2, srcGen: 6, callId: 0xfffffffe, bits: 0, payload: pattern(70000, 3) },
      { kind: 'notify', src: 22, srcNode: 3, srcGen: 7, callId: 0, bits: 0x80000001, payload: new Uint8Array(0) },
      { kind: 'call', src: 23, srcNode: 1, srcGen: 8, callId: 12, bits: 0, payload: new Uint8Array(0) },
    ],
  };
}

/** Recomputes the trailing SHA-256 (a hostile image that passes the checksum). */
function reseal(b: Buffer): Buffer {
  const body = b.length - IMAGE_TRAILER_BYTES;
  createHash('sha256').update(b.subarray(0, body)).digest().copy(b, body);
  return b;
}

function codeOf(f: () => unknown): string {
  try {
    f();
    return 'decoded';
  } catch (e) {
    return (e as { code?: string }).code ?? `non-dvs ${(e as Error).name}: ${(e as Error).message}`;
  }
}

const plain = (img: ServiceImage): unknown => ({
  ...img,
  state: img.state && Buffer.from(img.state).toString('hex'),
  messages: img.messages.map((m) => ({ ...m, payload: Buffer.from(m.payload).toString('hex') })),
});

t.test('round trip: state, the three kinds of messages, their fields and payloads, in order', async (tt) => {
  const img = sample();
  const bytes = encodeImage(img);
  const back = decodeImage(bytes);
  tt.same(plain(back), plain(img), 'decoded = encoded');
  tt.equal(
    bytes.length,
    IMAGE_HEADER_BYTES + Buffer.byteLength(JSON.stringify({ module: KV, args: img.args, name: 'kv' })) + 5000 + img.messages.reduce((n, m) => n + IMAGE_MESSAGE_HEADER_BYTES + m.payload.length, 0) + IMAGE_TRAILER_BYTES,
    'the size is header + metadata + state + messages + checksum',
  );
  const none = decodeImage(encodeImage({ ...img, state: null, messages: [] }));
  tt.equal(none.state, null, 'no state (a service without hooks) stays null');
  tt.same(none.messages, [], 'no messages');
  const empty = decodeImage(encodeImage({ ...img, state: new Uint8Array(0) }));
  tt.same(empty.state && empty.state.length, 0, 'empty state (snapshot returned 0 bytes) is not "no state"');
  const big = decodeImage(encodeImage({ ...img, state: pattern(3 << 20, 4) }));
  tt.equal(Buffer.compare(Buffer.from(big.state!), Buffer.from(pattern(3 << 20, 4))), 0, 'a 3 MiB state survives');
  tt.same(
    [...imageExpectedReplies(back, 1)],
    [3, 23, 8, 12, 4100],
    'expected replies: the calls from callers on node 1 as [dc, callerEp, callerGen, callId, ep]',
  );
  tt.same([...imageExpectedReplies(back, 2)], [3, 21, 6, 0xfffffffe, 4100], 'and on node 2');
  tt.equal(codeOf(() => encodeImage({ ...img, id: 0 })), 'EDVSINVAL', 'id 0 cannot be encoded');
});

t.test('image files: written in pieces (the state is not copied), read back whole, into a scratch buffer when it fits', async (tt) => {
  const dir = join(tmpdir(), `dvs-serve-image-files-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const img = { ...sample(), state: pattern(300000, 5) };
  const f = join(dir, 'a.img');
  const n = writeImageFile(f, img);
  const whole = encodeImage(img);
  tt.equal(n, whole.length, 'writeImageFile returns the size');
  const fresh = readImageFile(f);
  tt.equal(Buffer.compare(fresh, whole), 0, 'the file is byte for byte what encodeImage builds');
  const scratch = Buffer.alloc(1 << 20, 0xee);
  const inScratch = readImageFile(f, scratch);
  tt.equal(inScratch.buffer, scratch.buffer, 'read into the scratch buffer when it fits');
  tt.same(plain(decodeImage(inScratch)), plain(img), 'and decodes to the same image');
  const small = readImageFile(f, Buffer.alloc(100));
  tt.equal(Buffer.compare(small, whole), 0, 'a scratch buffer too small: read into a new one');
  tt.equal(statSync(f).mode & 0o777, 0o600, 'the file is private (mode 0600)');
  tt.throws(() => readImageFile(join(dir, 'missing.img')), { code: 'ENOENT' }, 'a missing file: the fs error (the runtime wraps it)');
});

t.test('truncated at every length, and every byte flipped: EDVSINVAL', async (tt) => {
  const img = sample();
  img.messages[1].payload = pattern(300, 3);  // keep the image small: every prefix and byte is tried
  img.state = pattern(200, 9);
  const bytes = encodeImage(img);
  const truncated = new Set<string>();
  for (let n = 0; n < bytes.length; n++) truncated.add(codeOf(() => decodeImage(bytes.subarray(0, n))));
  tt.same([...truncated], ['EDVSINVAL'], `each of the ${bytes.length} prefixes is refused with EDVSINVAL`);
  const flipped = new Set<string>();
  for (let i = 0; i < bytes.length; i++) {
    const b = Buffer.from(bytes);
    b[i] ^= 0x01 << (i % 8);
    flipped.add(codeOf(() => decodeImage(b)));
  }
  tt.same([...flipped], ['EDVSINVAL'], `each of the ${bytes.length} single-bit corruptions is refused with EDVSINVAL`);
  tt.match(codeOf(() => decodeImage(Buffer.concat([bytes, Buffer.from([0])]))), 'EDVSINVAL', 'a byte appended: refused');
  tt.equal(codeOf(() => decodeImage('nope' as unknown as Uint8Array)), 'EDVSINVAL', 'not bytes at all: EDVSINVAL');
});

t.test('wrong version or magic, with a valid checksum: refused, saying why', async (tt) => {
  const bytes = encodeImage(sample());
  const v2 = reseal(Buffer.from(bytes));
  v2.writeUInt16LE(2, 4);
  reseal(v2);
  tt.throws(() => decodeImage(v2), { code: 'EDVSINVAL', message: /unsupported version 2/ }, 'version 2: EDVSINVAL naming the version');
  const magic = Buffer.from(bytes);
  magic.write('ELF\x7f', 0, 'latin1');
  reseal(magic);
  tt.throws(() => decodeImage(magic), { code: 'EDVSINVAL', message: /wrong magic/ }, 'another file: EDVSINVAL (wrong magic)');
  const sum = Buffer.from(bytes);
  sum[sum.length - 1] ^= 0xff;
  tt.throws(() => decodeImage(sum), { code: 'EDVSINVAL', message: /checksum/ }, 'a damaged checksum: EDVSINVAL (checksum mismatch)');
});

t.test('hostile images: lying fields behind a valid checksum are refused', async (tt) => {
  const img = sample();
  const base = encodeImage(img);
  const metaLen = base.readUInt32LE(24);
  const stateAt = IMAGE_HEADER_BYTES + metaLen;
  const msg0 = stateAt + img.state!.length;
  const cases: [string, (b: Buffer) => void, RegExp][] = [
    ['unknown flags', (b) => b.writeUInt16LE(0x8001, 6), /flags/],
    ['migration id 0', (b) => b.writeUInt32LE(0, 8), /id 0/],
    ['dc out of range', (b) => b.writeUInt32LE(5000, 12), /dc/],
    ['endpoint out of range', (b) => b.writeUInt32LE(0x1000000, 16), /endpoint/],
    ['node out of range', (b) => b.writeUInt32LE(1024, 20), /node/],
    ['metadata length past the end', (b) => b.writeUInt32LE(0xffffffff, 24), /metadata length/],
    ['state length past the end', (b) => b.writeUInt32LE(0xfffffff0, 28), /state length/],
    ['state bytes without the flag', (b) => b.writeUInt16LE(0, 6), /state flag|unexpected bytes|kind|exceeds/],
    ['a message count that cannot fit', (b) => b.writeUInt32LE(0x7fffffff, 32), /cannot fit/],
    ['one message too many', (b) => b.writeUInt32LE(5, 32), /truncated|cannot fit/],
    ['one message too few', (b) => b.writeUInt32LE(3, 32), /unexpected bytes/],
    ['reserved header field', (b) => b.writeUInt32LE(1, 36), /reserved/],
    ['unknown message kind', (b) => b.writeUInt32LE(3, msg0), /unknown kind 3/],
    ['kind 0', (b) => b.writeUInt32LE(0, msg0), /unknown kind 0/],
    ['reserved message bytes', (b) => b.writeUInt32LE(0x0101, msg0), /reserved/],
    ['source endpoint out of range', (b) => b.writeUInt32LE(0x1000000, msg0 + 4), /source endpoint/],
    ['source node out of range', (b) => b.writeUInt32LE(4096, msg0 + 8), /source node/],
    ['payload over 1 MiB', (b) => b.writeUInt32LE((1 << 20) + 1, msg0 + 24), /1 MiB/],
    ['payload past the end', (b) => b.writeUInt32LE(1 << 19, msg0 + 24), /exceeds/],
  ];
  for (const [what, edit, why] of cases) {
    const b = Buffer.from(base);
    edit(b);
    reseal(b);
    tt.throws(() => decodeImage(b), { code: 'EDVSINVAL', message: why }, what);
  }
  // Metadata that is not what it should be.
  const withMeta = (meta: string): Buffer => {
    const m = Buffer.from(meta);
    const b = Buffer.concat([base.subarray(0, IMAGE_HEADER_BYTES), m, base.subarray(stateAt)]);
    b.writeUInt32LE(m.length, 24);
    return reseal(b);
  };
  tt.throws(() => decodeImage(withMeta('{"module":')), { code: 'EDVSINVAL', message: /not UTF-8 JSON/ }, 'metadata that is not JSON');
  tt.throws(() => decodeImage(withMeta('\xff\xfe')), { code: 'EDVSINVAL', message: /not UTF-8 JSON/ }, 'metadata that is not UTF-8');
  tt.throws(() => decodeImage(withMeta('null')), { code: 'EDVSINVAL', message: /module/ }, 'metadata null');
  tt.throws(() => decodeImage(withMeta('{"module":"/m.js","args":[1],"name":""}')), { code: 'EDVSINVAL', message: /args/ }, 'args not strings');
  tt.throws(() => decodeImage(withMeta('{"module":"/m.js","args":[],"name":"' + 'n'.repeat(40) + '"}')), { code: 'EDVSINVAL', message: /name/ }, 'name too long');
  tt.throws(() => decodeImage(withMeta('{"module":"","args":[],"name":""}')), { code: 'EDVSINVAL', message: /module/ }, 'empty module path');
  // Random bodies behind a valid header and checksum: refused or decoded, never another exception.
  const seen = new Set<string>();
  for (let i = 0; i < 3000; i++) {
    const b = Buffer.from(base.subarray(0, Math.min(base.length, 40 + (i % 200) * 3 + IMAGE_TRAILER_BYTES)));
    const r = pattern(b.length, i + 1);
    for (let k = 24; k < b.length - IMAGE_TRAILER_BYTES; k++) if (r[k] & 1) b[k] = r[k];
    seen.add(codeOf(() => decodeImage(reseal(b))));
  }
  tt.ok([...seen].every((c) => c === 'EDVSINVAL' || c === 'decoded'), `3000 random images: only EDVSINVAL (or a valid decode): ${[...seen].join(', ')}`);
});

t.test('dvs serve --restore with a corrupt or foreign image: exit 1 with EDVSINVAL, no crash, nothing left', async (tt) => {
  const ns = uniqueNs('serveimg');
  const dir = join(tmpdir(), `dvs-serve-image-test-${process.pid}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const good = encodeImage({ ...sample(), dc: 1, ep: 10 });
  const bad = Buffer.from(good);
  bad[100] ^= 0x20;
  const files: [string, Buffer | null, RegExp][] = [
    ['corrupt.img', bad, /EDVSINVAL: bad service image: checksum mismatch/],
    ['truncated.img', good.subarray(0, 50), /EDVSINVAL: bad service image/],
    ['missing.img', null, /EDVSINVAL: cannot read the image/],
  ];
  for (const [name, bytes, why] of files) {
    const f = join(dir, name);
    if (bytes) writeFileSync(f, bytes);
    const r = await runCli(tt, ['serve', KV, '--dc', '1', '--ep', '10', '--node', '1', '--namespace', ns, '--restore', f]);
    tt.equal(r.code, 1, `${name}: exit status 1`);
    tt.match(r.stderr, why, `${name}: the reason on stderr`);
    tt.notMatch(r.stderr, /at .*\.js:\d+/, `${name}: no stack trace (not a crash)`);
  }
  // A valid image of another endpoint or module: refused as well.
  const other = join(dir, 'other.img');
  writeFileSync(other, good);
  const r1 = await runCli(tt, ['serve', KV, '--dc', '1', '--ep', '11', '--node', '1', '--namespace', ns, '--restore', other]);
  tt.equal(r1.code, 1, 'image of endpoint 10 restored as 11: exit 1');
  tt.match(r1.stderr, /EDVSINVAL: the image is of endpoint 1:10, not 1:11/, 'saying so');
  const r2 = await runCli(tt, ['serve', join(ROOT, 'dist', 'test', 'fixtures', 'svc-hooks.js'), '--dc', '1', '--ep', '10', '--node', '1', '--namespace', ns, '--restore', other]);
  tt.equal(r2.code, 1, 'image of kv.js restored into another module: exit 1');
  tt.match(r2.stderr, /EDVSINVAL: the image is of module/, 'saying so');
  tt.same(shmFiles(ns), [], 'no segment created');
  tt.ok(existsSync(other), 'the image file is the caller\'s: left alone');
});
