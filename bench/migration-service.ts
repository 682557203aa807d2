/**
 * The service module of the `migration` bench suite (bench/suites/migration.ts),
 * run by `dvs serve dist/bench/migration-service.js STATE_BYTES --dc D --ep E …`:
 * a key-value store of STATE_BYTES bytes (values of VALUE_BYTES pseudo-random
 * bytes under keys k0, k1, …; a smaller last value when STATE_BYTES is not a
 * multiple), snapshot() / restore() in a length-prefixed binary form (the
 * whole store is copied both ways, as a real store would), plus what the
 * suite measures:
 *
 * - per-client sequence checks: every message is JSON {op, c, s}; `s` of
 *   client `c` must be the previous one + 1. A seq above that counts the
 *   skipped seqs as missing; a seq below it is `reordered` if it was missing,
 *   else `duplicated`. `n` counts every message seen. The suite derives
 *   lost = seqs the client used − (n − duplicated).
 * - measurement points on the host's monotonic clock (`process.hrtime`,
 *   CLOCK_MONOTONIC: one clock for every process of the host): the entry of
 *   the last handle() at the source, snapshot() start and end, restore() start
 *   and end at the destination, the entry of the first handle() there. They
 *   travel in the state; the destination appends one record per hop to a log
 *   the suite reads (and empties) with {op:'mlog'} after every migration. Downtime as the suite reports it = first
 *   handle() at the destination − last handle() at the source.
 *
 * Requests: {op:'put', c, s} (one-way) and {op:'add', c, s} → {s, n} (n: the
 * messages seen from c, so n = s while nothing is lost, duplicated or reset);
 * {op:'stats'} → {clients}; {op:'mlog'} → {log} (and empties it); {op:'verify'} → {ok, hops,
 * bytes} (the store's SHA-256 against the one taken when it was filled).
 */
import { createHash } from 'node:crypto';

const VALUE_BYTES = 1024;

/** The service's sequence record of one client. */
export interface Track {
  /** The next seq expected. */
  next: number;
  /** Messages seen (duplicates included). */
  n: number;
  dup: number;
  reord: number;
  /** Seqs skipped and not seen since (bounded). */
  missing: number[];
}

/** One hop as the service measured it (ms on the host's monotonic clock). */
export interface HopRecord {
  hop: number;
  srcPid: number;
  dstPid: number;
  lastSrc: number;
  snap0: number;
  snap1: number;
  rest0: number;
  rest1: number;
  /** null: nothing was handled at the destination before it migrated again (an idle service). */
  first: number | null;
}

interface Meta {
  v: 1;
  clients: Record<string, Track>;
  hops: number;
  digest: string;
  bytes: number;
  log: HopRecord[];
  /** Measurement points of the hop in progress (set by snapshot()). */
  /** 0: nothing handled since the start or the last restore (an idle service). */
  lastSrc: number;
  snap0: number;
  srcPid: number;
}

const MAX_MISSING = 10_000;
const MAX_LOG = 10_000;

let store = new Map<string, Uint8Array>();
let clients: Record<string, Track> = {};
let hops = 0;
let digest = '';
let bytes = 0;
let log: HopRecord[] = [];
let lastHandled = 0;
/** At a destination until its first handle(): the hop being measured. */
let pending: Omit<HopRecord, 'first'> | null = null;

const now = (): number => Number(process.hrtime.bigint()) / 1e6;

function storeDigest(): string {
  const h = createHash('sha256');
  for (const [k, v] of store) h.update(k).update(v);
  return h.digest('hex');
}

/** init(ctx): a fresh start fills the store with `args[0]` bytes; a destination waits for restore(). */
export function init(ctx: { args: string[]; restoring: boolean }): void {
  if (ctx.restoring) return;
  const total = Number(ctx.args[0] ?? 0);
  if (!Number.isInteger(total) || total < 0) throw new Error(`migration-service: STATE_BYTES must be a non-negative integer, got ${ctx.args[0]}`);
  // xorshift32: incompressible enough, reproducible, fast.
  let x = 0x9e3779b9;
  for (let i = 0, left = total; left > 0; i++) {
    const v = new Uint8Array(Math.min(VALUE_BYTES, left));
    const w = new Uint32Array(v.buffer, 0, v.length >> 2);
    for (let j = 0; j < w.length; j++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      w[j] = x >>> 0;
    }
    store.set(`k${i}`, v);
    left -= v.length;
  }
  bytes = total;
  digest = storeDigest();
}

function seen(c: unknown, s: unknown): Track | null {
  if (typeof c !== 'string' || typeof s !== 'number' || !Number.isInteger(s)) return null;
  const t = (clients[c] ??= { next: 1, n: 0, dup: 0, reord: 0, missing: [] });
  t.n++;
  if (s === t.next) t.next++;
  else if (s > t.next) {
    for (let k = t.next; k < s && t.missing.length < MAX_MISSING; k++) t.missing.push(k);
    t.next = s + 1;
  } else {
    const i = t.missing.indexOf(s);
    if (i >= 0) {
      t.missing.splice(i, 1);
      t.reord++;
    } else t.dup++;
  }
  return t;
}

function record(first: number | null): void {
  log.push({ ...pending!, first });
  if (log.length > MAX_LOG) log.shift();
  pending = null;
}

export function handle(msg: { kind: string; json(): unknown }): unknown {
  const t = now();
  if (pending) record(t);
  lastHandled = t;
  if (msg.kind === 'notify') return undefined;
  const m = msg.json() as { op?: unknown; c?: unknown; s?: unknown };
  switch (m.op) {
    case 'put':
      seen(m.c, m.s);
      return { ok: true };
    case 'add': {
      const x = seen(m.c, m.s);
      return { s: m.s, n: x ? x.n : 0 };
    }
    case 'stats':
      return { clients };
    case 'mlog': {
      // Handed over and forgotten, so that the log does not grow the state from hop to hop.
      const out = log;
      log = [];
      return { log: out };
    }
    case 'verify': {
      const d = storeDigest();
      return { ok: d === digest, hops, bytes, keys: store.size };
    }
    default:
      throw new Error(`migration-service: unknown op ${JSON.stringify(m.op)}`);
  }
}

/** [f64 snapshot end][u32 meta length][meta JSON][u32 key count]{[u16 key length][key][u32 value length][value]}… */
export function snapshot(): Uint8Array {
  const snap0 = now();
  if (pending) record(null);
  const meta: Meta = { v: 1, clients, hops, digest, bytes, log, lastSrc: lastHandled, snap0, srcPid: process.pid };
  const metaBuf = Buffer.from(JSON.stringify(meta));
  let size = 8 + 4 + metaBuf.length + 4;
  for (const [k, v] of store) size += 2 + Buffer.byteLength(k) + 4 + v.length;
  const out = Buffer.allocUnsafe(size);
  let at = 8;
  at = out.writeUInt32LE(metaBuf.length, at);
  at += metaBuf.copy(out, at);
  at = out.writeUInt32LE(store.size, at);
  for (const [k, v] of store) {
    const kl = out.write(k, at + 2);
    out.writeUInt16LE(kl, at);
    at += 2 + kl;
    at = out.writeUInt32LE(v.length, at);
    out.set(v, at);
    at += v.length;
  }
  out.writeDoubleLE(now(), 0);
  return out;
}

export function restore(image: Uint8Array): void {
  const rest0 = now();
  const b = Buffer.from(image.buffer, image.byteOffset, image.byteLength);
  const snap1 = b.readDoubleLE(0);
  let at = 8;
  const ml = b.readUInt32LE(at);
  at += 4;
  const meta = JSON.parse(b.toString('utf8', at, at + ml)) as Meta;
  at += ml;
  if (meta.v !== 1) throw new Error('migration-service: not a version 1 snapshot');
  const count = b.readUInt32LE(at);
  at += 4;
  // The values are copied into memory of this process (one block), not kept as views of the image.
  const own = Buffer.allocUnsafe(b.length - at);
  b.copy(own, 0, at);
  const next = new Map<string, Uint8Array>();
  let o = 0;
  for (let i = 0; i < count; i++) {
    const kl = own.readUInt16LE(o);
    const k = own.toString('utf8', o + 2, o + 2 + kl);
    o += 2 + kl;
    const vl = own.readUInt32LE(o);
    o += 4;
    next.set(k, own.subarray(o, o + vl));
    o += vl;
  }
  store = next;
  clients = meta.clients;
  hops = meta.hops + 1;
  digest = meta.digest;
  bytes = meta.bytes;
  log = meta.log;
  pending = { hop: hops, srcPid: meta.srcPid, dstPid: process.pid, lastSrc: meta.lastSrc, snap0: meta.snap0, snap1, rest0, rest1: now() };
}
