// arena-header.test.ts — a segment that is not a dvs arena of this layout
// (a foreign file, another layout version, a corrupt or short header, a
// truncated file) is refused with EDVSARENA and a message naming the segment,
// and it is left untouched.
import { readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import t from 'tap';
import { attach, DvsError } from '../lib/index.js';
import { assertNoShm, uniqueNs } from './helpers.js';

const ns = uniqueNs('hdr');
const segment = (name: string): string => `dvs.${ns}-${name}.0`;

/** The first 8 KiB of a real arena (its header), and its size. */
function realArena(): { bytes: Buffer; size: number } {
  const node = attach({ node: 0, namespace: `${ns}-src` });
  const size = node.info().size;
  const bytes = Buffer.from(new Uint8Array(node._ab, 0, 8192));
  node.detach();
  return { bytes, size };
}

/** Attaching to a planted segment: the error it raises (or null). */
function attachTo(name: string, bytes: Buffer, size: number): { err: DvsError | null; intact: boolean } {
  const p = `/dev/shm/${segment(name)}`;
  writeFileSync(p, bytes, { mode: 0o600 });
  truncateSync(p, size);  // sparse: the rest reads as zeros
  let err: DvsError | null = null;
  try {
    attach({ node: 0, namespace: `${ns}-${name}` }).detach();
  } catch (e) {
    err = e as DvsError;
  }
  const intact = statSync(p).size === size && readFileSync(p).subarray(0, bytes.length).equals(bytes.subarray(0, size));
  rmSync(p, { force: true });
  return { err, intact };
}

t.test('foreign, incompatible and corrupt segments are refused', async (tt) => {
  const { bytes, size } = realArena();
  const cases: [string, Buffer, number, RegExp][] = [];
  cases.push(['foreign', Buffer.alloc(8192, 0x41), 1 << 20, /not a dvs arena/]);
  const foreignIdle = Buffer.alloc(8192, 0x41);
  foreignIdle.fill(0, 176, 4096);  // zero where an arena keeps its state and creator ("initialising")
  cases.push(['foreign0', foreignIdle, 1 << 20, /not a dvs arena/]);
  const version = Buffer.from(bytes);
  version.writeUInt32LE(999, 8);
  cases.push(['version', version, size, /layout version 999/]);
  const corrupt = Buffer.from(bytes);
  corrupt.writeUInt32LE(corrupt.readUInt32LE(36) + 1, 36);  // a config field covered by the checksum
  cases.push(['corrupt', corrupt, size, /checksum/]);
  cases.push(['short', Buffer.from(bytes), size - 4096, /does not match its header/]);
  for (const [name, b, sz, why] of cases) {
    const { err, intact } = attachTo(name, b, sz);
    tt.ok(err instanceof DvsError, `${name}: a DvsError`);
    tt.equal(err?.code, 'EDVSARENA', `${name}: EDVSARENA`);
    tt.match(err?.message ?? '', why, `${name}: the message says why`);
    tt.ok((err?.message ?? '').includes(segment(name)), `${name}: the message names the segment`);
    tt.ok(intact, `${name}: the segment was not modified`);
  }
});

t.test('a truncated segment (smaller than a header) is refused after a bounded wait', async (tt) => {
  const t0 = Date.now();
  const { err, intact } = attachTo('truncated', Buffer.alloc(100, 1), 100);
  tt.equal(err?.code, 'EDVSARENA');
  tt.match(err?.message ?? '', /truncated/);
  tt.ok(Date.now() - t0 < 10000, 'bounded');
  tt.ok(intact, 'left as it was');
});

t.test('nothing left behind', async (tt) => {
  for (const name of ['src', 'foreign', 'foreign0', 'version', 'corrupt', 'short', 'truncated']) assertNoShm(tt, `${ns}-${name}`);
});
